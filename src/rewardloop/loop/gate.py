"""Off-policy estimates of engagement for the loop's gate: how much would users engage with the candidate, estimated
from what they did with the serving version's answers — without showing them the candidate.

The log. For each request the server sampled a slate of n completions y_1..y_n from the serving model π_s and logged
each with its propensity μ_j = P(y_j shown | x, slate) (uniform: 1/n); the user was shown one, y_a, and reacted
with events scored r = engagement_score(events).

The target policy. A model π is evaluated as the policy that shows slate member j with probability

    π(j | x, slate) = softmax_j( log π(y_j | x) − log π_s(y_j | x) )          [N, n]

— sampling-importance-resampling of the serving model's samples towards π (as n grows it samples from π itself).
The serving model is the uniform policy (its weights are 1: its estimate is the logged mean); a candidate's weights
w = π(a | x, slate) / μ_a are bounded by 1/μ_a. ``rewardloop.eval.ope`` gives SNIPS / DR with normal confidence
intervals; DR's q̂(x, y) is the round's engagement reward model, calibrated to engagement units by a ridge fit on
the training rows. The gate (``rounds.GateConfig.ope``) promotes only if the candidate's lower bound is at least
the serving value − ``ope_tolerance``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from rewardloop.algorithms.preference import sequence_logps
from rewardloop.data.tokenize import tokenize_row
from rewardloop.eval import ope
from rewardloop.rewards.engagement import engagement_score
from rewardloop.store import Store


@dataclass(frozen=True)
class Logged:
    """One logged request: the prompt, the slate the server sampled, which member was shown, μ of it, its reward."""

    prompt: str | list  # text, or a chat's messages
    slate: list  # completions: texts, or assistant messages
    shown: int
    propensity: float
    reward: float


def response_rewards(rows: list[dict]) -> dict[str, dict]:
    """Engagement rows (one per event) → one entry per response: prompt, completion, propensity, r (its events
    scored together)."""
    events: dict[str, list] = defaultdict(list)
    first: dict[str, dict] = {}
    for row in rows:
        first.setdefault(row["response_id"], row)
        events[row["response_id"]].append({"type": row["event"], "value": row["value"]})
    return {
        rid: {"prompt": r["prompt"], "completion": r["completion"], "propensity": r["propensity"]}
        | {"reward": engagement_score(events[rid])}
        for rid, r in first.items()
    }


def slate_ids(response_id: str, candidate_index: int | None, n_candidates: int | None) -> tuple[list[str], int]:
    """The ids of the slate a logged response was sampled in (the server names them ``<request>-<k>``), and its
    position in it."""
    if not n_candidates or n_candidates == 1:
        return [response_id], 0
    base, _, index = response_id.rpartition("-")
    if not index.isdigit() or candidate_index is None:
        raise ValueError(
            f"response {response_id!r}: logged with n_candidates={n_candidates} but its id does not end in -<index>"
        )
    start = int(index) - candidate_index
    return [f"{base}-{start + k}" for k in range(n_candidates)], candidate_index


def logged_slates(store: Store, rows: list[dict]) -> list[Logged]:
    """Engagement rows → one ``Logged`` per shown response, with its slate's completions read from the store."""
    out = []
    for rid, r in response_rewards(rows).items():
        it = store.get_interaction(rid)  # exists: the rows were read through it
        ids, shown = slate_ids(rid, it["candidate_index"], it["n_candidates"])
        slate = []
        for sid in ids:
            sib = store.get_interaction(sid)
            if sib is None:
                raise ValueError(f"response {rid!r}: its slate member {sid!r} is not in the store")
            chat = sib["kind"] == "chat"  # as store.export writes a chat completion
            slate.append([{"role": "assistant", "content": sib["completion"]}] if chat else sib["completion"])
        p = 1.0 if r["propensity"] is None else r["propensity"]
        out.append(Logged(r["prompt"], slate, shown, p, r["reward"]))
    return out


@torch.no_grad()
def completion_logps(model, tokenizer, pairs: list[tuple[str, str]], max_length: int, batch: int = 32) -> torch.Tensor:
    """log π(completion | prompt) of (prompt, completion) pairs: [N]."""
    seqs = [tokenize_row(tokenizer, {"prompt": p, "completion": c}, max_length, truncate=True) for p, c in pairs]
    device = next(model.parameters()).device
    parts = [
        sequence_logps(model, seqs[i : i + batch], tokenizer.pad_token_id, device) for i in range(0, len(seqs), batch)
    ]
    return torch.cat(parts).cpu()


def slate_logps(model, tokenizer, logs: list[Logged], max_length: int) -> list[np.ndarray]:
    """log π(y_j | x) of every slate member, per logged request: N arrays of [n]."""
    flat = completion_logps(model, tokenizer, [(lg.prompt, y) for lg in logs for y in lg.slate], max_length).numpy()
    out, i = [], 0
    for lg in logs:
        out.append(flat[i : i + len(lg.slate)])
        i += len(lg.slate)
    return out


def slate_policy(logp_model: np.ndarray, logp_serving: np.ndarray) -> np.ndarray:
    """π(j | x, slate) = softmax_j(log π(y_j|x) − log π_s(y_j|x)) over one slate: [n] → [n]."""
    z = logp_model - logp_serving
    e = np.exp(z - z.max())
    return e / e.sum()


def estimate(
    logs: list[Logged],
    policies: list[np.ndarray],
    method: str,
    q: Callable[[str, list[str]], np.ndarray] | None = None,
    level: float = 0.9,
) -> ope.Estimate:
    """V̂(π) from the logs, given π(· | x, slate) per request (``policies``): SNIPS, or DR with q̂(x, slate) → [n]."""
    r = np.array([lg.reward for lg in logs])  # [N]
    w = np.array([pi[lg.shown] / lg.propensity for lg, pi in zip(logs, policies, strict=True)])  # [N]
    if method == "snips":
        return ope.snips(r, w, level=level)
    if method == "dr":
        if q is None:
            raise ValueError("gate.ope=dr needs a reward model q̂ (an engagement round trains one)")
        qs = [q(lg.prompt, lg.slate) for lg in logs]  # N × [n]
        q_logged = np.array([qj[lg.shown] for lg, qj in zip(logs, qs, strict=True)])
        q_target = np.array([float(pi @ qj) for pi, qj in zip(policies, qs, strict=True)])
        return ope.dr(r, w, q_logged, q_target, level=level)
    raise ValueError(f"gate.ope: expected snips | dr | none, got {method!r}")


def calibrated_q(score: Callable[[list[str], list[str]], list[float]], train: list[dict]) -> Callable:
    """q̂(x, slate) [n]: reward-model scores mapped to engagement units by a ridge fit on the training responses
    (r ≈ a·score + b)."""
    resp = list(response_rewards(train).values())
    s = np.array(score([r["prompt"] for r in resp], [r["completion"] for r in resp]))  # [M]
    theta = ope.fit_ridge(np.stack([s, np.ones_like(s)], axis=1), [r["reward"] for r in resp], lam=1e-3)  # [2]

    def q(prompt: str, slate: list[str]) -> np.ndarray:
        return theta[0] * np.array(score([prompt] * len(slate), slate)) + theta[1]

    return q


def ope_metrics(
    parent, candidate, tokenizer, logs: list[Logged], method: str, max_length: int, q=None, level: float = 0.9
) -> dict[str, float]:
    """The serving model's and the candidate's engagement estimates on the held-out logs, with the candidate's CI."""
    lp_s = slate_logps(parent, tokenizer, logs, max_length)
    lp_c = slate_logps(candidate, tokenizer, logs, max_length)
    serving = estimate(logs, [slate_policy(s, s) for s in lp_s], method, q, level)
    cand = estimate(logs, [slate_policy(c, s) for c, s in zip(lp_c, lp_s, strict=True)], method, q, level)
    values = {"ope_serving": serving.value, "ope_candidate": cand.value, "ope_lo": cand.lo, "ope_hi": cand.hi}
    return {k: float(v) for k, v in values.items()} | {"ope_n": float(cand.n)}
