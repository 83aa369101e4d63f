"""collect: generate + score → a ``Rollout`` with rewards (step 1 of every RL loop).

Takes only the policy weights, the tokenizer, prompt rows and reward functions — no trainer state — so the Ray
rollout workers and the feedback service can call it too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from rewardloop.config import GenerationConfig
from rewardloop.rewards.scoring import OnError, score_completions
from rewardloop.rollout.engine import generate
from rewardloop.types import Rollout


@torch.no_grad()
def collect(
    model,
    tokenizer,
    rows: list[dict[str, Any]],
    gen: GenerationConfig,
    reward_fns: dict[str, Callable[..., list[float]]],
    *,
    samples_per_prompt: int = 1,
    weights: dict[str, float] | None = None,
    on_error: OnError = "skip",
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
) -> Rollout:
    """Sample ``samples_per_prompt`` responses per row (rows repeated consecutively: group g = rows g·G … g·G+G−1),
    score them, and return the Rollout with ``rewards`` [B] and extras: ``valid`` [B] bool, ``components``
    {name: [B]}, ``reward_errors`` (failed samples), ``rows`` (the source row of each sample)."""
    was_training = model.training
    model.eval()
    expanded = [row for row in rows for _ in range(samples_per_prompt)]
    prompts = [r["prompt"] for r in expanded]
    chunk = batch_size or len(prompts)
    parts = [
        generate(model, tokenizer, prompts[i : i + chunk], gen, generator=generator)
        for i in range(0, len(prompts), chunk)
    ]
    rollout = parts[0] if len(parts) == 1 else concat_rollouts(parts, tokenizer.pad_token_id)
    model.train(was_training)
    columns = {k: [r.get(k) for r in expanded] for k in expanded[0] if k not in ("prompt", "completion")}
    scored = score_completions(reward_fns, prompts, rollout.responses, columns, weights, on_error)
    device = rollout.prompt_ids.device
    rollout.rewards = torch.tensor(scored.rewards, dtype=torch.float32, device=device)
    rollout.extras.update(
        valid=torch.tensor(scored.valid, device=device),
        components={k: torch.tensor(v, dtype=torch.float32) for k, v in scored.components.items()},
        reward_errors=scored.errors,
        rows=expanded,
    )
    return rollout


def concat_rollouts(parts: list[Rollout], pad_id: int) -> Rollout:
    """Join Rollouts from several generate calls (re-padding prompts on the left and responses on the right)."""
    P = max(p.prompt_ids.shape[1] for p in parts)
    R = max(p.response_ids.shape[1] for p in parts)

    def left(t: torch.Tensor, value) -> torch.Tensor:
        return torch.nn.functional.pad(t, (P - t.shape[1], 0), value=value)

    def right(t: torch.Tensor, value) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, R - t.shape[1]), value=value)

    return Rollout(
        prompt_ids=torch.cat([left(p.prompt_ids, pad_id) for p in parts]),
        prompt_mask=torch.cat([left(p.prompt_mask, 0) for p in parts]),
        response_ids=torch.cat([right(p.response_ids, pad_id) for p in parts]),
        response_mask=torch.cat([right(p.response_mask, 0) for p in parts]),
        logprobs=torch.cat([right(p.logprobs, 0.0) for p in parts]),
        finished=torch.cat([p.finished for p in parts]),
        prompts=[s for p in parts for s in p.prompts],
        responses=[s for p in parts for s in p.responses],
    )
