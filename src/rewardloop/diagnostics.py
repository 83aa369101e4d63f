"""Plain-language warnings when a training signal degenerates, and per-step sample tables. Algorithm-agnostic.

Everything here is a function over a dict of step metrics (and the history of earlier steps) or over a ``Rollout``,
so PPO, GRPO/RLOO and any later loop share it. ``check_degeneration`` reads these keys when present:

``reward/mean``, ``reward/std`` · ``kl`` (mean per-token KL estimate to the reference) · ``entropy`` ·
``loss/policy``, ``loss/value``, ``loss/total`` · ``response/length`` (mean generated tokens) ·
``reward_share/<name>`` (share of one reward component, from ``component_shares``).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch

from rewardloop.types import Rollout

log = logging.getLogger("rewardloop.diagnostics")

ENTROPY_FLOOR = 0.05  # nats per token: below this the policy is (near) deterministic
DOMINANCE = 0.9  # one component carrying > 90% of the reward variance
DRIFT_WINDOW = 10  # steps compared at the start and the end of the history for length/reward drift
DRIFT_LENGTH = 0.5  # relative change of mean response length counted as drift


def _num(metrics: dict[str, Any], key: str) -> float | None:
    value = metrics.get(key)
    return float(value) if isinstance(value, int | float) and math.isfinite(float(value)) else None


def check_degeneration(
    metrics: dict[str, Any], history: list[dict[str, Any]] | None = None, *, n_samples: int | None = None
) -> list[str]:
    """Warnings (plain sentences) about the step described by ``metrics``; ``history`` = earlier step dicts."""
    out: list[str] = []
    std, mean = _num(metrics, "reward/std"), _num(metrics, "reward/mean")
    if std is not None and std == 0.0:
        who = f"all {n_samples} rewards" if n_samples else "all rewards"
        out.append(
            f"{who} in this batch are equal ({mean:.4g}): advantages carry no signal. Check the reward function, "
            "or raise temperature / samples per prompt."
        )
    kl = _num(metrics, "kl")
    if kl is not None and kl < -1e-3:
        out.append(
            f"the mean KL estimate to the reference is negative ({kl:.4g}): the k1 estimator is unbiased but noisy, "
            "and a persistently negative value means the sampler and the training forward disagree (temperature, "
            "padding or position ids), or too few samples; consider kl_estimator=k3."
        )
    for key in ("loss/policy", "loss/total"):
        value = metrics.get(key)
        if isinstance(value, int | float) and value == 0.0:
            out.append(f"{key} is exactly zero: the update does nothing (all advantages zero or every token masked).")
    ent = _num(metrics, "entropy")
    if ent is not None and ent < ENTROPY_FLOOR:
        out.append(
            f"entropy collapsed to {ent:.3g} nats/token: the policy is almost deterministic and stops exploring. "
            "Raise the entropy bonus or the KL coefficient, or lower the learning rate."
        )
    out += _length_drift(metrics, history or [])
    shares = {k.removeprefix("reward_share/"): v for k, v in metrics.items() if k.startswith("reward_share/")}
    if len(shares) > 1:
        top, share = max(shares.items(), key=lambda kv: kv[1] if kv[1] is not None else -1)
        if share is not None and share > DOMINANCE:
            out.append(
                f"reward component {top!r} carries {share:.0%} of the reward variance: the others barely matter. "
                "Check their scales and weights."
            )
    return out


def _length_drift(metrics: dict[str, Any], history: list[dict[str, Any]]) -> list[str]:
    """Response length moving by > DRIFT_LENGTH while reward rises: a classic reward-hacking sign."""
    rows = [r for r in history if _num(r, "response/length") is not None and _num(r, "reward/mean") is not None]
    rows.append(metrics)
    if len(rows) < 2 * DRIFT_WINDOW or _num(metrics, "response/length") is None:
        return []
    first, last = rows[:DRIFT_WINDOW], rows[-DRIFT_WINDOW:]

    def avg(rs, key):
        return sum(_num(r, key) or 0.0 for r in rs) / len(rs)

    len0, len1 = avg(first, "response/length"), avg(last, "response/length")
    rew0, rew1 = avg(first, "reward/mean"), avg(last, "reward/mean")
    if len0 > 0 and abs(len1 - len0) / len0 > DRIFT_LENGTH and rew1 > rew0:
        way = "longer" if len1 > len0 else "shorter"
        return [
            f"responses got {way} ({len0:.1f} → {len1:.1f} tokens) while the reward rose ({rew0:.3g} → {rew1:.3g}): "
            "the policy may be exploiting a length bias of the reward (reward hacking). Read the sample table."
        ]
    return []


def component_shares(components: dict[str, Any], valid: torch.Tensor | None = None) -> dict[str, float]:
    """``reward_share/<name>``: each component's share of Σ variances (0..1) over the batch (valid rows only)."""
    if len(components) < 2:
        return {}
    var = {}
    for name, values in components.items():
        t = torch.as_tensor(values, dtype=torch.float32).cpu()
        if valid is not None:
            t = t[torch.as_tensor(valid).cpu().bool()]
        var[name] = float(t.var()) if t.numel() > 1 else 0.0
    total = sum(var.values())
    return {f"reward_share/{k}": (v / total if total > 0 else float("nan")) for k, v in var.items()}


def sample_table(
    rollout: Rollout, k: int = 2, extra: dict[str, Any] | None = None, max_chars: int = 300
) -> list[dict[str, Any]]:
    """The ``k`` highest- and ``k`` lowest-reward samples: prompt, response, reward, components, length, finished.

    ``extra``: more per-sample columns ({name: [B] tensor or list}), e.g. the RM score or the per-sample KL.
    """
    if rollout.rewards is None or len(rollout) == 0:
        return []
    rewards = rollout.rewards.detach().float().cpu()
    valid = rollout.valid
    order = [i for i in torch.argsort(rewards, descending=True).tolist() if valid is None or bool(valid[i])]
    picks = [("best", i) for i in order[:k]] + [("worst", i) for i in order[::-1][:k] if i not in order[:k]]
    columns = {**rollout.components, **(extra or {})}
    table = []
    for rank, i in picks:
        row = {
            "rank": rank,
            "prompt": rollout.prompts[i][-max_chars:],
            "response": rollout.responses[i][:max_chars],
            "reward": float(rewards[i]),
            "length": int(rollout.response_mask[i].sum()),
            "finished": bool(rollout.finished[i]),
        }
        row["components"] = {n: _item(v, i) for n, v in columns.items()}
        table.append(row)
    for err in rollout.reward_errors:
        table.append({"rank": "error", **{k: (v[:max_chars] if isinstance(v, str) else v) for k, v in err.items()}})
    return table


def _item(values: Any, i: int) -> Any:
    v = values[i]
    return float(v) if isinstance(v, torch.Tensor | int | float) else v


def emit(warnings: list[str], step: int, seen: dict[str, int] | None = None, every: int = 50) -> list[str]:
    """Log each warning (a given message kind at most once per ``every`` steps, tracked in ``seen``)."""
    shown = []
    for msg in warnings:
        kind = " ".join(msg.split()[:2])  # message kind without its numbers
        if seen is not None and step - seen.get(kind, -(10**9)) < every:
            continue
        if seen is not None:
            seen[kind] = step
        log.warning("step %d: %s", step, msg)
        shown.append(msg)
    return shown
