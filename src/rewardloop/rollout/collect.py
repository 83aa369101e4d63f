"""collect: generate + score → a typed ``Rollout`` with rewards and group ids (step 1 of every RL loop).

One path for every trainer: prompt rows (``collect``) or environments, multi-turn included (``collect_env`` in
``env_collect.py``), chosen by ``collect_step``. It takes only the policy weights, the tokenizer, the prompts or
environments and a ``RewardSet`` — no trainer state — so Ray rollout workers and the serving process can call it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from rewardloop.config import GenerationConfig
from rewardloop.envs.base import Environment
from rewardloop.rewards.composite import RewardSet
from rewardloop.rollout.engine import derive_seed, generate
from rewardloop.rollout.env_collect import collect_env
from rewardloop.types import Rollout

EnvFactory = Callable[..., Environment]  # factory(seed=int) -> Environment


def reward_inputs(ro: Rollout) -> tuple[list[Any], list[Any], dict[str, list], list[list[int]]]:
    """What a reward function receives, as TRL passes it: (prompts, completions, columns, completion_ids).

    Conversational rows (a ``prompt_messages`` column, kept by the data loader) give message lists as prompts and
    ``[{"role": "assistant", "content": text}]`` as completions; other rows give strings. Columns are the rows'
    other fields, one list per column aligned with the samples."""
    rows = ro.rows or [{} for _ in range(len(ro))]
    n = ro.response_mask.sum(1).tolist()
    completion_ids = [ids[:k] for ids, k in zip(ro.response_ids.tolist(), n, strict=True)]
    keys = [k for k in rows[0] if k not in ("prompt", "completion", "prompt_messages")] if rows else []
    columns = {k: [r.get(k) for r in rows] for k in keys}
    if rows and "prompt_messages" in rows[0]:
        prompts = [r["prompt_messages"] for r in rows]
        completions = [[{"role": "assistant", "content": c}] for c in ro.responses]
        return prompts, completions, columns, completion_ids
    return list(ro.prompts), list(ro.responses), columns, completion_ids


def score_rollout(ro: Rollout, rewards: RewardSet | None) -> Rollout:
    """Fill ``rewards``, ``valid``, ``components`` and ``reward_errors``: r = environment reward (when the rollout
    came from environments: component ``env``) + Σ_k w_k · r_k over ``rewards``."""
    device = ro.prompt_ids.device
    B = len(ro)
    total = torch.zeros(B, dtype=torch.float32, device=device)
    valid = torch.ones(B, dtype=torch.bool, device=device)
    if ro.token_rewards is not None:
        ro.components["env"] = ro.token_rewards.sum(1).float().cpu()
        total = total + ro.token_rewards.sum(1).float()
    if rewards is not None and rewards.fns:
        scored = rewards.score(*reward_inputs(ro))
        total = total + torch.tensor(scored.rewards, dtype=torch.float32, device=device)
        valid = torch.tensor(scored.valid, device=device)
        ro.components.update({k: torch.tensor(v, dtype=torch.float32) for k, v in scored.components.items()})
        ro.reward_errors = ro.reward_errors + scored.errors
    ro.rewards, ro.valid = torch.where(valid, total, torch.zeros_like(total)), valid
    return ro


@torch.no_grad()
def collect(
    model,
    tokenizer,
    rows: list[dict[str, Any]],
    gen: GenerationConfig,
    rewards: RewardSet | None,
    *,
    samples_per_prompt: int = 1,
    group_start: int = 0,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
    row_seed: int | None = None,
    sample: Callable[..., Rollout] | None = None,
) -> Rollout:
    """Sample ``samples_per_prompt`` responses per row and score them. Row g's samples get group id
    ``group_start + g``; ``rows`` holds each sample's source row.

    ``row_seed`` (per-row sampling): sample j of group id g draws its randomness from ``derive_seed(row_seed, g, j)``
    alone, so splitting the rows over several calls or workers (with their group ids) samples the same responses;
    None: one ``generator`` for the batch. ``sample``: the sampler, ``engine.generate``'s signature (Ray workers may
    pass vLLM's, distributed/vllm_backend.py); None: this module's ``generate``, looked up at call time."""
    was_training = model.training
    model.eval()
    G = samples_per_prompt
    expanded = [row for row in rows for _ in range(G)]
    prompts = [r["prompt"] for r in expanded]
    seeds = None
    if row_seed is not None:
        seeds = [derive_seed(row_seed, group_start + g, j) for g in range(len(rows)) for j in range(G)]
    chunk = batch_size or len(prompts)
    sample = sample or generate
    parts = [
        sample(
            model, tokenizer, prompts[i : i + chunk], gen, generator=generator,
            row_seeds=None if seeds is None else seeds[i : i + chunk],
        )
        for i in range(0, len(prompts), chunk)
    ]  # fmt: skip
    model.train(was_training)
    ro = Rollout.concat(parts, tokenizer.pad_token_id)
    device = ro.prompt_ids.device
    ro.group_ids = (group_start + torch.arange(len(rows), device=device)).repeat_interleave(G)
    ro.rows = expanded
    return score_rollout(ro, rewards)


def collect_step(
    model,
    tokenizer,
    gen: GenerationConfig,
    rewards: RewardSet | None,
    *,
    rows: list[dict[str, Any]] | None = None,
    env_factory: EnvFactory | None = None,
    n_groups: int | None = None,
    samples_per_prompt: int = 1,
    group_start: int = 0,
    seed: int = 0,
    max_turns: int = 1,
    max_length: int | None = None,
    generator: torch.Generator | None = None,
    row_seeded: bool = False,
    sample: Callable[..., Rollout] | None = None,
) -> Rollout:
    """One batch of experience from prompt ``rows`` or, with ``env_factory``, from ``n_groups`` environments × G
    episodes (the G episodes of a group start from the same seed, so they compare actions from one state).

    ``row_seeded``: each sample's sampling is seeded from (``seed``, its group id, its index in the group) instead
    of drawn from ``generator`` — what makes a batch split over Ray workers sample what one process samples.
    ``sample``: the sampler for prompt rows (``engine.generate``'s signature); environments use the built-in engine."""
    if env_factory is None:
        if rows is None:
            raise ValueError("collect_step needs prompt rows or an env_factory")
        return collect(
            model, tokenizer, rows, gen, rewards, samples_per_prompt=samples_per_prompt, group_start=group_start,
            generator=generator, row_seed=seed if row_seeded else None, sample=sample,
        )  # fmt: skip
    G, N = samples_per_prompt, n_groups or len(rows or [])
    seeds = [seed * 1_000_003 + group_start + g for g in range(N) for _ in range(G)]
    envs = [env_factory(seed=s) for s in seeds]
    sample_seeds = [derive_seed(seed, group_start + g, j) for g in range(N) for j in range(G)] if row_seeded else None
    ro = collect_env(
        model, tokenizer, envs, gen, max_turns=max_turns, seeds=seeds, generator=generator, max_length=max_length,
        row_seeds=sample_seeds,
    )  # fmt: skip
    ro.group_ids = (group_start + torch.arange(N, device=ro.prompt_ids.device)).repeat_interleave(G)
    # An environment that reports its source row (DatasetEnv: info["row"]) gives reward terms the row's columns.
    ro.rows = [dict(info[0].get("row", {})) if info else {} for info in ro.infos]
    return score_rollout(ro, rewards)
