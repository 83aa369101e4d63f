"""Pure tensor maths shared by every algorithm. No state, no models, no I/O.

Shapes: ``B`` = batch (sequences), ``T`` = response tokens, ``V`` = vocabulary, ``G`` = group size.
Masks are 1 for real (response) tokens and 0 for padding.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def position_ids_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding: [B, L] mask → [B, L] (as transformers' generate computes them)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of ``x`` where ``mask`` is 1."""
    return (x * mask).sum() if dim is None else (x * mask).sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is 1 (0 when the mask is empty)."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of the masked entries (Bessel-corrected when ``unbiased``, as in the PPO reference code)."""
    mask = mask.to(x.dtype)
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.sum()
        var = var * n / (n - 1).clamp(min=1.0)
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the masked entries; with ``shift_mean=False`` the mean is added back (used for rewards)."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask.to(x.dtype)


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log π(token | context) for each position: logits [B, T, V], tokens [B, T] → [B, T].

    Uses log_softmax + gather in float32 (bf16 log-softmax loses the small differences the PPO ratio needs).
    """
    logp = F.log_softmax(logits.float(), dim=-1)  # [B, T, V]
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # [B, T]


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy H(π(·|context)) per position: logits [B, T, V] → [B, T]."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-token estimators of KL(π ‖ π_ref) from samples of π (Schulman 2020, "Approximating KL Divergence").

    With log r = log π_ref(x) − log π(x):  k1 = −log r (unbiased, can be negative),
    k2 = ½ (log r)² (biased, low variance),  k3 = (r − 1) − log r (unbiased, always ≥ 0).
    """
    log_r = ref_logp - logp  # [B, T]
    if kind == "k1":
        return -log_r
    if kind == "k2":
        return 0.5 * log_r**2
    if kind == "k3":
        log_r = log_r.clamp(-20.0, 20.0)  # exp overflow guard, as in the reference implementations
        return torch.exp(log_r) - 1.0 - log_r
    raise ValueError(f"unknown KL estimator {kind!r}; allowed: 'k1', 'k2', 'k3'")


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised Advantage Estimation (Schulman et al. 2016, eq. 16) over response tokens.

    rewards, values, mask: [B, T]; the episode ends after the last masked token (bootstrap value 0 there).
    δ_t = r_t + γ V_{t+1} − V_t,  Â_t = δ_t + γ λ Â_{t+1};  returns R_t = Â_t + V_t.  Returns (advantages, returns) [B, T].
    Padding positions (mask 0) inside or after the response carry no reward and do not propagate value.
    """
    mask = mask.to(values.dtype)
    values = values * mask
    advantages = torch.zeros_like(values)
    last = torch.zeros_like(values[:, 0])  # Â_{t+1}  [B]
    T = values.shape[1]
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)  # [B]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * last) * mask[:, t]
        advantages[:, t] = last
    returns = advantages + values
    return advantages * mask, returns * mask


def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """G_t = Σ_{k≥t} γ^{k−t} r_k over masked tokens: [B, T] → [B, T] (REINFORCE-style returns)."""
    mask = mask.to(rewards.dtype)
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        running = (rewards[:, t] + gamma * running) * mask[:, t]
        out[:, t] = running
    return out


def clipped_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    eps_low: float,
    eps_high: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO clipped surrogate per token (Schulman et al. 2017, eq. 7), as a loss to minimise.

    ρ = π/π_old;  L = −min(ρ Â, clip(ρ, 1−ε_low, 1+ε_high) Â).  ``eps_high`` defaults to ``eps_low`` (DAPO's
    clip-higher sets it larger). Returns (loss [B, T], clipped [B, T] as 0/1 floats for the clip fraction).
    """
    eps_high = eps_low if eps_high is None else eps_high
    ratio = torch.exp(logp - old_logp)  # [B, T]
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    loss = torch.maximum(unclipped, clipped)
    return loss, (clipped > unclipped).float()


def clipped_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, clip: float | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Value loss ½ max((V − R)², (clip(V, V_old ± c) − R)²) per token (the PPO2 baselines trick).

    With ``clip=None`` it is plain ½ (V − R)². Returns (loss [B, T], clipped [B, T] as 0/1 floats).
    """
    unclipped = (values - returns) ** 2
    if clip is None:
        return 0.5 * unclipped, torch.zeros_like(unclipped)
    v_clipped = old_values + (values - old_values).clamp(-clip, clip)
    clipped = (v_clipped - returns) ** 2
    return 0.5 * torch.maximum(unclipped, clipped), (clipped > unclipped).float()


def aggregate_loss(loss: torch.Tensor, mask: torch.Tensor, mode: str = "token-mean", max_len: int | None = None):
    """Reduce a per-token loss [B, T] to a scalar.

    token-mean: Σ loss·mask / Σ mask (DAPO);  seq-mean: mean over sequences of each sequence's token mean (GRPO paper);
    constant: Σ loss·mask / (B · max_len) with a fixed ``max_len`` (Dr.GRPO, no length bias).
    """
    mask = mask.to(loss.dtype)
    if mode == "token-mean":
        return masked_mean(loss, mask)
    if mode == "seq-mean":
        return masked_mean(loss, mask, dim=1).mean()
    if mode == "constant":
        denom = max_len if max_len is not None else loss.shape[1]
        return (loss * mask).sum() / (loss.shape[0] * denom)
    raise ValueError(f"unknown loss aggregation {mode!r}; allowed: 'token-mean', 'seq-mean', 'constant'")


def accumulation_weight(micro_mask: torch.Tensor, mini_mask: torch.Tensor, mode: str = "token-mean") -> float:
    """Weight of one micro-batch's aggregated loss in gradient accumulation, so that Σ_micro w·loss_micro equals the
    whole minibatch's ``aggregate_loss``: the micro-batch's share of the tokens (token-mean) or of the sequences
    (seq-mean, constant). Masks [b, T] ⊂ [B, T]."""
    if mode == "token-mean":
        return float(micro_mask.sum()) / max(float(mini_mask.sum()), 1.0)
    return micro_mask.shape[0] / mini_mask.shape[0]


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 − Var[R − V] / Var[R] over masked tokens (1 = perfect critic, ≤ 0 = no better than a constant)."""
    var_r = masked_var(returns, mask)
    if var_r.item() == 0:
        return float("nan")
    return float(1.0 - masked_var(returns - values, mask) / var_r)


def group_stats(x: torch.Tensor, group_ids: torch.Tensor, weight: torch.Tensor | None = None):
    """Per-sample statistics of the sample's own group, grouping by id (never by row order):
    x, group_ids [B] (any ids, any order), weight [B] 0/1 (which samples count; default all) →
    (mean [B], unbiased std [B] (0 for groups of one), count [B]) of the weighted members of each sample's group."""
    _, inv = torch.unique(group_ids, return_inverse=True)  # [B] group index 0..n_groups−1
    w = torch.ones_like(x) if weight is None else weight.to(x.dtype)
    n_groups = int(inv.max()) + 1 if len(inv) else 0
    count = torch.zeros(n_groups, dtype=x.dtype, device=x.device).index_add_(0, inv, w)  # [N]
    total = torch.zeros_like(count).index_add_(0, inv, x * w)
    mean = total / count.clamp(min=1.0)
    sq = torch.zeros_like(count).index_add_(0, inv, w * (x - mean[inv]) ** 2)
    std = (sq / (count - 1).clamp(min=1.0)).sqrt()
    return mean[inv], std[inv], count[inv]


# -- slates: Plackett–Luce and the top-K off-policy correction (algorithms/slate_pg.py) ---------------------------
def plackett_luce_log_prob(scores: np.ndarray, slate: np.ndarray, temperature: float = 1.0) -> float:
    """log P(slate) = Σ_k [ s_{a_k}/T − log Σ_{j not yet placed} exp(s_j/T) ] (Plackett 1975; Luce 1959). [K], [L]"""
    s = np.asarray(scores, dtype=float) / temperature
    remaining = np.ones(len(s), dtype=bool)
    total = 0.0
    for a in np.asarray(slate, dtype=int):
        rest = s[remaining]
        total += s[a] - (rest.max() + np.log(np.exp(rest - rest.max()).sum()))
        remaining[a] = False
    return float(total)


def item_probs(scores: np.ndarray, temperature: float = 1.0, epsilon: float = 0.0) -> np.ndarray:
    """The per-item policy β(a|s) = (1 − ε)·softmax(s/T)_a + ε/K — the top-K correction's behaviour probabilities
    (the probability of each candidate as the first pick). [K]"""
    s = np.asarray(scores, dtype=float) / temperature
    p = np.exp(s - s.max())
    return (1.0 - epsilon) * p / p.sum() + epsilon / len(s)


def pl_log_probs(scores: torch.Tensor, slates: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log π(A|s) = Σ_k [ s_{a_k}/T − log Σ_{j not yet placed} exp(s_j/T) ] per row: [B, K], [B, L] → [B]."""
    s = scores / temperature
    placed = torch.zeros_like(s, dtype=torch.bool)
    total = torch.zeros(s.shape[0], dtype=s.dtype)
    for k in range(slates.shape[1]):
        a = slates[:, k : k + 1]  # [B, 1]
        total = total + s.gather(1, a)[:, 0] - torch.logsumexp(s.masked_fill(placed, -torch.inf), dim=1)
        placed = placed.scatter(1, a, True)
    return total


def topk_multiplier(pi: torch.Tensor, slate_size: int) -> torch.Tensor:
    """λ_L(a) = ∂α/∂π = L (1 − π(a|s))^(L−1), with α = 1 − (1 − π)^L the chance a is in a slate of L independent
    draws (Chen et al. 2019, the top-K correction). Any shape."""
    return slate_size * (1.0 - pi) ** (slate_size - 1)


def topk_weights(pi: torch.Tensor, beta: torch.Tensor, slate_size: int, cap: float) -> torch.Tensor:
    """min(π/β, c̄) · λ_L: the capped off-policy importance weight times the top-K multiplier. [B, L]"""
    return torch.clamp(pi / beta, max=cap) * topk_multiplier(pi, slate_size)


def item_entropy(scores: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """H(softmax(s/T)) per row: [B, K] → [B]."""
    logp = torch.log_softmax(scores / temperature, dim=1)
    return -(logp.exp() * logp).sum(1)
