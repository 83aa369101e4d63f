"""The language-model slate policy (a causal LM scores each candidate's text; Plackett–Luce draws a slate with its
exact propensity) and its policy-gradient training on the engagement reward (REINFORCE, PPO-clip, and
the top-K off-policy correction of Chen et al. 2019, "Top-K Off-Policy Correction for a REINFORCE Recommender
System", WSDM).

The policy is the LM's: each step the frozen causal LM reads the observation and every candidate's text
(``bandits.lm_item_features``) and a small scoring head on its hidden states turns that into scores

    s_i = c · ℓ_i + h_xᵀ W h_i + vᵀ h_i

with ℓ_i the LM's mean log-probability of item i's text given the context x, h_x the context's and h_i the item's
mean final hidden state. At initialisation (c = 1, W = 0, v = 0) this is exactly the untrained ``LMSlatePolicy``.
Slates are Plackett–Luce draws at temperature T (a uniform slate with probability ε).

Training alternates (``train``): 1. **collect** slates on simulated users with the current policy through
``run_bandit``, logging the behaviour's propensities β; 2. **estimate** advantages A = r − b; 3. **update** the head
on every round's logs so far, off-policy corrected by β. Losses (``LOSSES``), with π the current policy:

    reinforce   −min(π(A|s)/β(A|s), c̄) · A_slate · log π(A|s)                 π(A|s): the slate's PL probability
    ppo         −min(ρ A_slate, clip(ρ, 1 − ε_c, 1 + ε_c) A_slate),  ρ = π(A|s)/β(A|s)   (ops.clipped_policy_loss)
    topk        −Σ_k min(π(a_k|s)/β(a_k|s), c̄) · λ_L(a_k) · A_k · log π(a_k|s),  λ_L(a) = L (1 − π(a|s))^(L−1)

In ``topk`` (Chen et al.: the top-K correction with a capped importance weight) π(a|s) = softmax(s/T)_a is the
per-item policy and L the slate size (their K); A_k is the reward credited to position k minus its mean. An entropy
bonus η · H(softmax(s/T)) keeps exploring. The LM stays frozen, so its features are computed once per logged step —
unless ``train`` gets a ``tuner`` (``algorithms.slate_lm``, the ``lm-tuned`` policy): then the same loss also trains
the LM's weights, each minibatch's texts read again with gradient.

Online (``NeuralLinearPolicy``, the ``lm-online`` policy): the trained head keeps learning during the evaluation as a
neural-linear bandit. For candidate i the head gives its score s_i and the whitened low-rank states z_x, z_i ∈ ℝ^r;
a linear bandit reads

    φ_i = [s_i, vec(z_x[:m] ⊗ z_i[:m]), z_i[:m]] ∈ ℝ^(1 + m² + m)

with a ridge posterior r ≈ θᵀφ, A = λI + Σ φφᵀ, b = Σ r φ, θ̂ = A⁻¹b, ranks by θ̂ᵀφ_i + α √(φ_iᵀ A⁻¹ φ_i) (LinUCB)
and adds each shown item's reward online. With ``prior`` the posterior starts from the trainer's logs on the
training users (A₀ = λI + Φ_logᵀΦ_log, b₀ = Φ_logᵀ r_log).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from rewardloop.config import Section
from rewardloop.envs.personalization.harness import Choice, n_slates, run_bandit, top
from rewardloop.ops import (  # the slate maths: Plackett–Luce, the top-K correction
    clipped_policy_loss,
    item_entropy,
    item_probs,
    pl_log_probs,
    plackett_luce_log_prob,
    topk_weights,
)


# -- the language-model slate policy: scores from a causal LM, a slate by Plackett–Luce ---------------------------------
def plackett_luce_sample(
    scores: np.ndarray, size: int, rng: np.random.Generator, temperature: float = 1.0, epsilon: float = 0.0
) -> tuple[np.ndarray, float]:
    """A Plackett–Luce slate by the Gumbel-top-k trick (top-L of s/T + Gumbel noise is an exact PL draw; Yellott
    1977) — or, with probability ε, a uniformly random slate — and its propensity
    (1 − ε)·exp(log P_PL(slate)) + ε·(K − L)!/K!. [K] → ([L], float)"""
    s = np.asarray(scores, dtype=float) / temperature
    if rng.random() < epsilon:
        slate = rng.choice(len(s), size=size, replace=False)
    else:
        slate = top(s + rng.gumbel(size=len(s)), size)
    pl = float(np.exp(plackett_luce_log_prob(scores, slate, temperature)))
    return slate, (1.0 - epsilon) * pl + epsilon / n_slates(len(s), size)


@dataclass
class ItemFeatures:
    """What a causal LM reads off one step: per-candidate mean log-probability ``logp`` [K], the context's mean final
    hidden state ``h_context`` [d] and each candidate's mean final hidden state given the context ``h_items`` [K, d]."""

    logp: np.ndarray
    h_context: np.ndarray
    h_items: np.ndarray


def lm_item_features(model, tokenizer, context: str, items: list[str], normalise: bool = True) -> ItemFeatures:
    """One pass of the context (its KV cache shared by the K candidates), then the K candidate texts ``"\n" + item``
    after it: log π_LM(item_i | context) (summed, or per token with ``normalise``) and mean hidden states."""
    import torch

    from rewardloop.ops import logprobs_from_logits, masked_mean

    prompt = tokenizer(context, add_special_tokens=False)["input_ids"]
    texts = [tokenizer("\n" + item, add_special_tokens=False)["input_ids"] for item in items]
    p, r = len(prompt), max(len(t) for t in texts)
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and p + r > limit:
        raise ValueError(
            f"context ({p} tokens) + longest item ({r} tokens) exceeds the model's {limit} positions; "
            "shorten the context (e.g. FeedConfig(history=0))"
        )
    pad = tokenizer.pad_token_id or 0
    ids = torch.tensor([t + [pad] * (r - len(t)) for t in texts])  # [K, R] right-padded
    item_mask = torch.tensor([[1.0] * len(t) + [0.0] * (r - len(t)) for t in texts])  # [K, R]
    with torch.no_grad():
        head = model(torch.tensor([prompt]), use_cache=True, output_hidden_states=True)
        name = "cache" if "cache" in head else "past_key_values"  # transformers ≥ 5.2x renamed the KV cache
        cache = head[name]
        cache.batch_repeat_interleave(len(texts))
        mask = torch.cat([torch.ones(len(texts), p), item_mask], 1).long()  # [K, P + R]
        tail = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=torch.arange(p, p + r).expand(len(texts), r),
            **{name: cache},
            output_hidden_states=True,
        )
        logits = torch.cat([head.logits[:, -1:].expand(len(texts), 1, -1), tail.logits[:, :-1]], 1)  # [K, R, V]
        logp = logprobs_from_logits(logits, ids) * item_mask  # [K, R]
        total = logp.sum(-1)
        h_items = masked_mean(tail.hidden_states[-1], item_mask[..., None], dim=1)  # [K, d]
        h_context = head.hidden_states[-1][0].mean(0)  # [d]
    logp = total / item_mask.sum(-1) if normalise else total
    return ItemFeatures(logp.float().numpy(), h_context.float().numpy(), h_items.float().numpy())


def lm_states(model, tokenizer, texts: list[str], grad: bool = False):
    """Each text's mean final hidden state, read alone (no context): [N, d] numpy, or with ``grad`` a tensor that
    backpropagates into the LM's weights (``slate_lm.LMTuner``). One right-padded batch."""
    from rewardloop.ops import masked_mean

    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    r = max(len(t) for t in ids)
    mask = torch.tensor([[1] * len(t) + [0] * (r - len(t)) for t in ids])  # [N, R]
    batch = torch.tensor([t + [tokenizer.pad_token_id or 0] * (r - len(t)) for t in ids])
    with torch.set_grad_enabled(grad):
        hidden = model(input_ids=batch, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
        states = masked_mean(hidden, mask[..., None].float(), dim=1).float()
    return states if grad else states.numpy()


def lm_item_scores(model, tokenizer, context: str, items: list[str], normalise: bool = True) -> np.ndarray:
    """s_i = log π_LM(item_i | context): the summed (``normalise``: mean per token) log-probability of each
    candidate's text after the context. → [K]"""
    return lm_item_features(model, tokenizer, context, items, normalise).logp


@dataclass
class LoggedStep:
    """One step of the LM policy as training needs it: the LM's features, the shown slate [L], its propensity under
    the behaviour policy, the behaviour's per-item probabilities of the shown items β(a_k|s) [L], the rewards [L], and
    the texts the LM read (context, items) — to read them again once the LM's weights have moved."""

    features: ItemFeatures
    slate: np.ndarray
    propensity: float
    beta: np.ndarray
    rewards: np.ndarray
    texts: tuple[str, list[str]] | None = None


class LMSlatePolicy:
    """A causal LM as a slate policy: read every candidate's text given the observation (``lm_item_features``),
    score it (the LM's log-probability, or ``score_fn`` of the LM's features — a trained scoring head), sample an
    ordered slate by Plackett–Luce at ``temperature`` (a uniform slate with probability ``epsilon``), and log that
    slate's exact propensity. With ``record=True`` it keeps every step (``steps``) for the trainer
    (``algorithms.slate_pg``); it does not learn inside ``run_bandit`` itself.

    ``read="towers"`` reads the context and each item text separately (``lm_states``; an item's state is cached by
    its text, so a step costs one forward of the context) and leaves ``logp`` at 0 — for a ``score_fn`` that only
    uses the hidden states; ``read="joint"`` (default) reads every item after the context (``lm_item_features``).
    ``context="persona"`` reads only the observation's first line (the persona) as the context, not the history."""

    def __init__(
        self,
        model,
        tokenizer,
        temperature: float = 1.0,
        *,
        score_fn=None,
        epsilon: float = 0.0,
        record: bool = False,
        read: str = "joint",
        context: str = "all",
    ) -> None:
        if read not in ("joint", "towers"):
            raise ValueError(f"LMSlatePolicy read={read!r}; allowed: 'joint', 'towers'")
        if context not in ("all", "persona"):
            raise ValueError(f"LMSlatePolicy context={context!r}; allowed: 'all', 'persona'")
        if temperature <= 0 or not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"LMSlatePolicy needs temperature > 0 and 0 ≤ epsilon ≤ 1, got {temperature}, {epsilon}")
        self.model, self.tokenizer, self.temperature, self.epsilon = model, tokenizer, temperature, epsilon
        self.score_fn = score_fn or (lambda f: f.logp)
        self.steps: list[LoggedStep] | None = [] if record else None
        self._last: tuple | None = None
        self.read, self.context, self._item_states = read, context, {}

    def read_context(self, context: str) -> str:
        """What the LM reads as the context: the observation, or (``context="persona"``) its first line only."""
        return context.split("\n", 1)[0] if self.context == "persona" else context

    def features(self, context: str, items: list[str]) -> ItemFeatures:
        context = self.read_context(context)
        if self.read == "joint":
            return lm_item_features(self.model, self.tokenizer, context, items)
        if new := [t for t in items if t not in self._item_states]:
            self._item_states |= dict(zip(new, lm_states(self.model, self.tokenizer, new), strict=True))
        h_items = np.stack([self._item_states[t] for t in items])  # [K, d]
        return ItemFeatures(
            np.zeros(len(items), dtype=np.float32), lm_states(self.model, self.tokenizer, [context])[0], h_items
        )

    def select_text(self, context: str, items: list[str], size: int, rng: np.random.Generator) -> Choice:
        features = self.features(context, items)
        scores = self.score_fn(features)  # [K]
        slate, propensity = plackett_luce_sample(scores, size, rng, self.temperature, self.epsilon)
        beta = item_probs(scores, self.temperature, self.epsilon)[slate]  # [L]
        self._last = (features, slate, propensity, beta, (self.read_context(context), items))
        return Choice(slate, propensity)

    def update(self, context, features, arms, rewards) -> None:
        if self.steps is not None and self._last is not None:
            features, slate, propensity, beta, texts = self._last
            self.steps.append(LoggedStep(features, slate, propensity, beta, np.asarray(rewards, dtype=float), texts))


# -- training -------------------------------------------------------------------------------------------------------
class SlatePGConfig(Section):
    """Training the LM slate policy (``rewardloop personalize``'s ``train:`` section)."""

    model: str = Field("llama-1m", description="a tiny preset (llama-1m, qwen2-4m, ...) or a Hugging Face model path")
    model_seed: int = Field(0, description="init seed of a preset model")
    rank: int = Field(64, ge=1, description="r: principal directions of the LM's states the scoring head reads")
    rounds: int = Field(10, ge=1, description="collect → update rounds")
    steps_per_round: int = Field(500, ge=1, description="feed steps collected per round")
    epochs: int = Field(4, ge=1, description="passes over the logs per round")
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-2, gt=0.0)
    loss: Literal["topk", "reinforce", "ppo"] = Field("topk", description="topk (Chen et al. 2019) | reinforce | ppo")
    temperature: float = Field(1.0, gt=0.0, description="T of the Plackett–Luce draws while collecting")
    epsilon: float = Field(0.1, ge=0.0, le=1.0, description="ε: a uniform slate with this probability while collecting")
    entropy_coef: float = Field(0.0, ge=0.0, description="η: entropy bonus on the per-item policy")
    weight_cap: float = Field(10.0, gt=0.0, description="c̄: cap of the importance weight π/β")
    clip_eps: float = Field(0.2, gt=0.0, description="ε_c of the ppo loss")
    replay: bool = Field(True, description="learn from every round's logs (off-policy corrected), not the last only")
    lm_lr: float = Field(1e-4, gt=0.0, description="learning rate of the LM's own weights (the lm-tuned policy)")
    lm_clip: float = Field(1.0, gt=0.0, description="gradient-norm clip of the LM's weights (lm-tuned)")
    eval_temperature: float = Field(0.05, gt=0.0, description="T when the trained policy is evaluated")
    user_seed: int = Field(10_000, description="training users: env seeds user_seed + round (evaluation uses 0, 1, ..)")
    read: Literal["towers", "joint"] = Field(
        "towers",
        description="towers: context and items read apart (items cached; ℓ_i = 0) | joint: items after the context",
    )
    context: Literal["all", "persona"] = Field(
        "all", description="all: persona + recent history as the context | persona: the persona line only"
    )

    def policy(self, model, tokenizer, head: ScoringHead, *, explore: bool, record: bool = False) -> LMSlatePolicy:
        """The LM slate policy with ``head``: exploring (T, ε) for collection, else at ``eval_temperature``."""
        t, eps = (self.temperature, self.epsilon) if explore else (self.eval_temperature, 0.0)
        return LMSlatePolicy(
            model, tokenizer, t, score_fn=head.score, epsilon=eps, record=record, read=self.read, context=self.context
        )


# -- the policy's head ----------------------------------------------------------------------------------------------
class ScoringHead(torch.nn.Module):
    """s_i = c · ℓ_i + z_xᵀ W z_i / r + vᵀ z_i / √r (module docstring) on whitened low-rank states
    z = (h − μ) P / σ ∈ ℝ^r, with P the top-r principal directions of the first round's logged states (contexts and
    items apart) — fixed by ``fit_projection``, so that W has r² parameters rather than d². Initialised to the plain
    LM scores (c = 1, W = v = 0)."""

    def __init__(self, dim: int, rank: int) -> None:
        super().__init__()
        self.rank = rank
        self.c = torch.nn.Parameter(torch.ones(()))
        self.W = torch.nn.Parameter(torch.zeros(rank, rank))
        self.v = torch.nn.Parameter(torch.zeros(rank))
        for side in ("x", "i"):
            self.register_buffer(f"mu_{side}", torch.zeros(dim))
            self.register_buffer(f"P_{side}", torch.eye(dim, rank))
            self.register_buffer(f"sd_{side}", torch.ones(rank))

    def fit_projection(self, h_context: torch.Tensor, h_items: torch.Tensor) -> None:
        """Fix μ, P, σ from logged states [N, d] (contexts) and [N, K, d] (items)."""
        if len(h_context) < self.rank:
            raise ValueError(f"{len(h_context)} logged steps cannot fix rank {self.rank}: set steps_per_round ≥ rank")
        for side, h in (("x", h_context), ("i", h_items.reshape(-1, h_items.shape[-1]))):
            mu = h.mean(0)
            _, _, vt = torch.linalg.svd(h - mu, full_matrices=False)
            p = vt[: self.rank].T  # [d, r]
            getattr(self, f"mu_{side}").copy_(mu), getattr(self, f"P_{side}").copy_(p)
            getattr(self, f"sd_{side}").copy_(((h - mu) @ p).std(0).clamp(min=1e-6))

    def project(self, h_context: torch.Tensor, h_items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The whitened low-rank states z_x [B, r], z_i [B, K, r] of [B, d], [B, K, d]."""
        return (h_context - self.mu_x) @ self.P_x / self.sd_x, (h_items - self.mu_i) @ self.P_i / self.sd_i

    def forward(self, logp: torch.Tensor, h_context: torch.Tensor, h_items: torch.Tensor) -> torch.Tensor:
        """[B, K], [B, d], [B, K, d] → scores [B, K]."""
        z_x, z_i = self.project(h_context, h_items)  # [B, r], [B, K, r]
        bilinear = torch.einsum("bd,de,bke->bk", z_x, self.W, z_i) / self.rank
        return self.c * logp + bilinear + z_i @ self.v / self.rank**0.5

    @torch.no_grad()
    def score(self, f: ItemFeatures) -> np.ndarray:
        """One step's scores [K] (the ``score_fn`` of ``LMSlatePolicy``)."""
        t = [torch.as_tensor(x)[None] for x in (f.logp, f.h_context, f.h_items)]
        return self(*t)[0].numpy()


def stack(steps: list[LoggedStep]) -> dict[str, torch.Tensor]:
    """The logged steps as tensors: logp [N, K], h_context [N, d], h_items [N, K, d], slates [N, L], log_beta_slate
    [N], beta [N, L], rewards [N, L]."""

    def cat(get):
        return torch.as_tensor(np.stack([get(s) for s in steps]))

    return {
        "logp": cat(lambda s: s.features.logp).float(),
        "h_context": cat(lambda s: s.features.h_context).float(),
        "h_items": cat(lambda s: s.features.h_items).float(),
        "slates": cat(lambda s: s.slate).long(),
        "log_beta_slate": torch.log(cat(lambda s: np.float64(s.propensity))).float(),
        "beta": cat(lambda s: s.beta).float(),
        "rewards": cat(lambda s: s.rewards).float(),
    }


# -- losses (one table entry per method) ------------------------------------------------------------------------------
def reinforce_loss(scores, b, cfg: SlatePGConfig) -> torch.Tensor:
    logp = pl_log_probs(scores, b["slates"], cfg.temperature)  # [B]
    ratio = torch.clamp(torch.exp(logp.detach() - b["log_beta_slate"]), max=cfg.weight_cap)
    return -(ratio * b["adv_slate"] * logp).mean()


def ppo_loss(scores, b, cfg: SlatePGConfig) -> torch.Tensor:
    logp = pl_log_probs(scores, b["slates"], cfg.temperature)  # [B]
    loss, _ = clipped_policy_loss(logp[:, None], b["log_beta_slate"][:, None], b["adv_slate"][:, None], cfg.clip_eps)
    return loss.mean()


def topk_loss(scores, b, cfg: SlatePGConfig) -> torch.Tensor:
    log_pi = torch.log_softmax(scores / cfg.temperature, dim=1).gather(1, b["slates"])  # [B, L] log π(a_k|s)
    w = topk_weights(log_pi.detach().exp(), b["beta"], b["slates"].shape[1], cfg.weight_cap)  # [B, L]
    return -(w * b["adv"] * log_pi).sum(1).mean()


LOSSES: dict[str, Callable] = {"reinforce": reinforce_loss, "ppo": ppo_loss, "topk": topk_loss}


def advantages(data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A_k = r_k − mean_k (per position) and A_slate = Σ_k r_k − its mean."""
    r = data["rewards"]  # [N, L]
    slate = r.sum(1)
    return data | {"adv": r - r.mean(0, keepdim=True), "adv_slate": slate - slate.mean()}


def load_lm(cfg: SlatePGConfig, tokenizer):
    """The frozen LM: a tiny preset built from a seed, or a pretrained model from a path / hub name."""
    from transformers import AutoModelForCausalLM

    from rewardloop.models import preset_config
    from rewardloop.models.presets import PRESETS

    if cfg.model in PRESETS:
        config = preset_config(
            cfg.model,
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        torch.manual_seed(cfg.model_seed)
        model = AutoModelForCausalLM.from_config(config)
    else:
        model = AutoModelForCausalLM.from_pretrained(cfg.model)
    return model.eval().requires_grad_(False)


def round_metrics(log: list[dict]) -> dict[str, float]:
    """Mean exact expected reward and normalised regret of one collection round."""
    value, oracle, rand = (float(np.sum([r[k] for r in log])) for k in ("expected_reward", "oracle_reward", "random_reward"))  # fmt: skip
    return {"expected_reward": value / len(log), "regret": (oracle - value) / max(oracle - rand, 1e-12)}


# -- the trainer ------------------------------------------------------------------------------------------------------
def train(
    cfg: SlatePGConfig,
    model,
    tokenizer,
    make_env: Callable[[], object],
    on_round: Callable[[dict], None] | None = None,
    tuner=None,
) -> tuple[ScoringHead, list[dict], list[LoggedStep]]:
    """Train the scoring head of the LM slate policy on simulated users from ``make_env()`` (module docstring). With
    ``tuner`` (``slate_lm.LMTuner``) the same loss also trains the LM's own weights: a batch's scores come from the LM
    reading the logged texts again, with gradient (``tuner.scores``); each round collects with the updated LM.

    Returns the head, one record per round (the collection's exact expected reward and regret, the loss, the
    CPU-seconds and steps so far) and every round's logged steps."""
    torch.manual_seed(cfg.model_seed)
    head = ScoringHead(model.config.hidden_size, cfg.rank)
    groups = [{"params": list(head.parameters()), "lr": cfg.lr}]
    opt = torch.optim.Adam(groups + ([{"params": list(tuner.parameters()), "lr": cfg.lm_lr}] if tuner else []))
    logged: list[LoggedStep] = []
    history, cpu0 = [], time.process_time()
    for rnd in range(cfg.rounds):
        # 1. collect: the current policy explores (T, ε) on new training users; β is logged with each slate
        policy = cfg.policy(model, tokenizer, head, explore=True, record=True)
        log = run_bandit(make_env(), policy, cfg.steps_per_round, seed=cfg.user_seed + rnd)
        logged = (logged if cfg.replay else []) + policy.steps
        # 2. estimate
        data = advantages(stack(logged)) | (tuner.index(logged) if tuner else {})
        if rnd == 0:
            head.fit_projection(data["h_context"], data["h_items"])
        # 3. update: minibatch policy gradient, off-policy corrected by the logged β
        losses = []
        for _ in range(cfg.epochs):
            for idx in torch.randperm(len(logged)).split(cfg.batch_size):
                b = {k: v[idx] for k, v in data.items()}
                scores = tuner.scores(head, b) if tuner else head(b["logp"], b["h_context"], b["h_items"])  # [B, K]
                loss = (
                    LOSSES[cfg.loss](scores, b, cfg) - cfg.entropy_coef * item_entropy(scores, cfg.temperature).mean()
                )
                opt.zero_grad()
                loss.backward()
                if tuner:
                    torch.nn.utils.clip_grad_norm_(list(tuner.parameters()), cfg.lm_clip)
                opt.step()
                losses.append(loss.item())
        steps = (rnd + 1) * cfg.steps_per_round
        cpu = time.process_time() - cpu0
        history.append(
            {"round": rnd, **round_metrics(log), "loss": float(np.mean(losses)), "steps": steps, "cpu_s": cpu}
        )
        if on_round:
            on_round(history[-1])
    return head, history, logged


# -- online: the trained policy keeps learning during the evaluation (neural-linear) ---------------------------------
# (module docstring: "Online"). Riquelme, Tucker & Snoek 2018, "Deep Bayesian Bandits Showdown" (ICLR): a network's
# last-layer features with Bayesian linear regression on top; here with LinUCB's optimism (Li et al. 2010).


class NeuralLinearConfig(Section):
    """The online neural-linear layer of the ``lm-online`` policy (``rewardloop personalize``'s ``online:``)."""

    rank: int = Field(32, ge=1, description="m: principal directions of the head's states in φ (≤ train.rank)")
    alpha: float = Field(1.0, ge=0.0, description="α: LinUCB's width multiplier (0: greedy)")
    lam: float = Field(1.0, gt=0.0, description="λ: ridge prior precision")
    prior: bool = Field(True, description="start the posterior from the trainer's logs on the training users")
    online: bool = Field(True, description="update the posterior with the evaluation's own rewards")

    @property
    def dim(self) -> int:
        """D = 1 + m² + m, the size of φ."""
        return 1 + self.rank**2 + self.rank


@torch.no_grad()
def neural_features(head: ScoringHead, f: ItemFeatures, m: int) -> np.ndarray:
    """φ_i = [s_i, vec(z_x[:m] ⊗ z_i[:m]), z_i[:m]] for the K candidates of one step (module docstring: Online). → [K, 1 + m² + m]"""
    logp, h_x, h_i = (torch.as_tensor(x)[None] for x in (f.logp, f.h_context, f.h_items))
    s = head(logp, h_x, h_i)[0]  # [K]
    z_x, z_i = head.project(h_x, h_i)
    z_x, z_i = z_x[0, :m], z_i[0, :, :m]  # [m], [K, m]
    outer = (z_x[None, :, None] * z_i[:, None, :]).reshape(len(z_i), -1)  # [K, m²]
    return torch.cat([s[:, None], outer, z_i], 1).double().numpy()


class NeuralLinearPolicy:
    """The LM slate policy (its LM reads the text as ``lm``'s does) ranking by a linear bandit on ``neural_features``:
    ``bandit`` has ``select_phi(φ [K, D], L, rng)``, ``add(φ [n, D], r [n])`` and ``add_batch`` — LinUCB of
    ``algorithms.bandits`` with ``dim = cfg.dim``, ``alpha = cfg.alpha``, ``lam = cfg.lam`` (``rewardloop personalize``
    builds it)."""

    def __init__(
        self, lm: LMSlatePolicy, head: ScoringHead, cfg: NeuralLinearConfig, bandit, logs: list[LoggedStep] = ()
    ):
        if cfg.rank > head.rank:
            raise ValueError(f"online.rank={cfg.rank} exceeds the head's rank {head.rank} (train.rank)")
        self.lm, self.head, self.cfg, self.bandit = lm, head, cfg, bandit
        if cfg.prior and logs:
            phi = np.concatenate([neural_features(head, s.features, cfg.rank)[s.slate] for s in logs])  # [N·L, D]
            self.bandit.add_batch(phi, np.concatenate([s.rewards for s in logs]))
        self._last: tuple[np.ndarray, np.ndarray] | None = None

    def select_text(self, context: str, items: list[str], size: int, rng: np.random.Generator) -> Choice:
        phi = neural_features(self.head, self.lm.features(context, items), self.cfg.rank)  # [K, D]
        choice = self.bandit.select_phi(phi, size, rng)
        self._last = (phi, choice.slate)
        return choice

    def update(self, context, features, arms, rewards) -> None:
        if self.cfg.online and self._last is not None:
            phi, slate = self._last
            self.bandit.add(phi[slate], rewards)
