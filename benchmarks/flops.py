"""FLOP accounting for MFU: ≈2N FLOPs per token through a forward pass, ≈6N per trained token (forward + backward),
N = parameters doing matmuls per token (tied embedding counted once, as the LM head). Attention score FLOPs
(≈4·L·d per token per layer) are left out: under 3% at the ≤300-token sequences benchmarked here.
"""

from __future__ import annotations

from typing import Any


def grpo_phase_flops(
    n_params: int, batch: int, prompt_len: float, resp_len: float, with_ref: bool, recompute_old: bool = False
) -> dict[str, float]:
    """FLOPs of one GRPO step by phase: collect = prefill + decode; estimate = π_ref (when β > 0), plus π_old only
    when it is recomputed (rewardloop's default reuses the sampler's log-probs); update = 1 epoch."""
    tokens = batch * (prompt_len + resp_len)
    return {
        "collect": 2 * n_params * tokens,
        "estimate": 2 * n_params * tokens * (int(with_ref) + int(recompute_old)),
        "update": 6 * n_params * tokens,
    }


def ppo_phase_flops(n_params: int, batch: int, prompt_len: float, resp_len: float, epochs: int) -> dict[str, float]:
    """FLOPs of one PPO update by phase; policy, reference, value and reward models all have ``n_params``."""
    tokens = batch * (prompt_len + resp_len)
    fwd = 2 * n_params * tokens
    return {
        "collect": 2 * fwd,  # generation + the reward model's forward
        "estimate": 3 * fwd,  # old log-probs (policy) + old values (critic) + reference log-probs
        "train": 2 * epochs * 6 * n_params * tokens,  # policy and critic
    }


def mfu(flops: dict[str, float], seconds: dict[str, float], peak_gflops: float) -> dict[str, Any]:
    """Per phase: achieved GFLOP/s and its fraction of ``peak_gflops``."""
    out = {}
    for phase, f in flops.items():
        s = seconds.get(phase)
        if s:
            gflops = f / s / 1e9
            out[phase] = {"gflop": f / 1e9, "seconds": s, "gflops": gflops, "mfu": gflops / peak_gflops}
    return out
