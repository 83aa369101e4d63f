"""collect from ``Environment``s, multi-turn included: a batch of episodes → one ``Rollout``.

Each episode is one token sequence: the first observation is the prompt; the response part interleaves the policy's
actions with the environment's later observations::

    prompt: "Guess a number:"   response: " 5<eos>" "Too low. Again:" " 7<eos>"
    action_mask:                           1  1      0 0 0 0 0 0 0 0  1  1

``response_mask`` is 1 on every real response token (the model must attend to the environment's text), and
``action_mask`` is 1 only on tokens the policy generated (the ones the policy gradient and the critic's value targets
are about). The critic therefore values every action token given the whole conversation so far. Per-turn rewards sit
on the last token of each action (``token_rewards`` [B, R]); ``collect.score_rollout`` sums them into ``rewards``.
Like ``collect``, this takes only weights, a tokenizer and environments — no trainer state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rewardloop import chat
from rewardloop.config import GenerationConfig
from rewardloop.envs.base import Environment
from rewardloop.rollout.engine import derive_seed, encode_prompts, generate
from rewardloop.types import Observation, Rollout, pad_left, pad_right


def render_observation(tokenizer, obs: Observation, first: bool) -> str:
    """Text of an observation: a string as is; chat messages rendered by ``chat.render`` (the tokenizer's chat
    template, or ``"role: content\\n"`` lines), ending with the assistant prompt so the policy answers next."""
    if isinstance(obs, str):
        return obs
    if not isinstance(obs, list) or not all(isinstance(m, dict) and "content" in m for m in obs):
        raise ValueError(f"environment observation must be a string or a list of chat messages, got {obs!r:.200}")
    if not first:  # later turns: only the messages after the policy's last answer
        last_assistant = max((i for i, m in enumerate(obs) if m.get("role") == "assistant"), default=-1)
        obs = obs[last_assistant + 1 :]
    return chat.render(tokenizer, obs, add_generation_prompt=True)


@dataclass
class _Episode:
    context: list[int]  # every token so far (prompt + response part)
    prompt_len: int
    action_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)  # per response token (turn reward on the action's last token)
    actions: list[str] = field(default_factory=list)
    infos: list[dict] = field(default_factory=list)
    done: bool = False
    finished: bool = False  # the last action ended on EOS / a stop string

    def extend(self, ids: list[int], is_action: bool, logprobs: list[float] | None = None) -> None:
        self.context += ids
        self.action_mask += [int(is_action)] * len(ids)
        self.logprobs += logprobs if logprobs is not None else [0.0] * len(ids)
        self.rewards += [0.0] * len(ids)


@torch.no_grad()
def collect_env(
    model,
    tokenizer,
    envs: list[Environment],
    gen: GenerationConfig,
    *,
    max_turns: int = 1,
    seeds: list[int] | None = None,
    generator: torch.Generator | None = None,
    max_length: int | None = None,
    row_seeds: list[int] | None = None,
) -> Rollout:
    """Run one episode per environment (at most ``max_turns`` policy turns) and return the batch as a Rollout.

    ``row_seeds`` (one per episode): per-row sampling, turn k of episode i seeded with derive_seed(row_seeds[i], k)."""
    was_training = model.training
    model.eval()
    first_obs = [env.reset(seed=None if seeds is None else seeds[i]) for i, env in enumerate(envs)]
    prompts = [render_observation(tokenizer, o, first=True) for o in first_obs]
    episodes = [_Episode(list(ids), len(ids)) for ids in encode_prompts(tokenizer, prompts)]
    for turn in range(max_turns):
        active = [i for i, ep in enumerate(episodes) if not ep.done]
        if not active:
            break
        # 1. One policy turn for every running episode, conditioned on the whole conversation so far.
        out = generate(
            model,
            tokenizer,
            [prompts[i] for i in active],
            gen,
            generator=generator,
            prompt_token_ids=[episodes[i].context for i in active],
            row_seeds=None if row_seeds is None else [derive_seed(row_seeds[i], turn) for i in active],
        )
        for j, i in enumerate(active):
            ep, n = episodes[i], int(out.response_mask[j].sum())
            ep.extend(out.response_ids[j, :n].tolist(), True, out.logprobs[j, :n].tolist())
            ep.finished = bool(out.finished[j])
            # 2. The environment answers: reward for this action (on its last token), maybe a next observation.
            obs, reward, done, info = envs[i].step(out.responses[j])
            ep.rewards[-1] += float(reward)
            ep.actions.append(out.responses[j])
            ep.infos.append(info)
            too_long = max_length is not None and len(ep.context) + gen.max_new_tokens > max_length
            if done or obs is None or turn == max_turns - 1 or too_long:
                ep.done = True
                continue
            text = render_observation(tokenizer, obs, first=False)
            ep.extend(tokenizer(text, add_special_tokens=False)["input_ids"], False)
    model.train(was_training)
    return _to_rollout(episodes, prompts, tokenizer, next(model.parameters()).device)


def _to_rollout(episodes: list[_Episode], prompts: list[str], tokenizer, device) -> Rollout:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    prompt_ids, prompt_mask = pad_left([ep.context[: ep.prompt_len] for ep in episodes], pad)
    resp = [torch.tensor(ep.context[ep.prompt_len :] or [pad], dtype=torch.long) for ep in episodes]
    lengths = [len(ep.context) - ep.prompt_len for ep in episodes]

    def right(values: list[list], fill, dtype) -> torch.Tensor:
        return pad_right([torch.tensor(v or [fill], dtype=dtype) for v in values], fill)

    response_ids = pad_right(resp, pad)
    response_mask = torch.zeros_like(response_ids)
    for b, n in enumerate(lengths):
        response_mask[b, :n] = 1
    return Rollout(
        prompt_ids=prompt_ids.to(device),
        prompt_mask=prompt_mask.to(device),
        response_ids=response_ids.to(device),
        response_mask=response_mask.to(device),
        logprobs=right([ep.logprobs for ep in episodes], 0.0, torch.float32).to(device),
        finished=torch.tensor([ep.finished for ep in episodes], device=device),
        prompts=prompts,
        responses=tokenizer.batch_decode(response_ids.masked_fill(response_mask == 0, pad), skip_special_tokens=True),
        action_mask=right([ep.action_mask for ep in episodes], 0, torch.long).to(device),
        token_rewards=right([ep.rewards for ep in episodes], 0.0, torch.float32).to(device),
        turns=[ep.actions for ep in episodes],
        infos=[ep.infos for ep in episodes],
    )
