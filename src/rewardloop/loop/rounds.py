"""``rewardloop loop``: learn from the feedback the server collects, round after round, and promote only what is better.

One round (``run_round``), top to bottom:
  1. claim   — the feedback no round has used (``LoopState.unclaimed``); a round left open by a crash is resumed with
               the rows it had claimed, and its trainer resumes from its last checkpoint;
  2. data    — the claimed feedback as TRL rows (``store.export``: pairs, thumbs, ratings or engagement events),
               split into train / held-out by a hash of the response ids (stable across resumes);
  3. train   — from the serving version: DPO on pairs, KTO on thumbs; for ratings / engagement a reward model on the
               rows, then GRPO against it (``trainer`` / ``reward_trainer`` override the learners' configs);
  4. evaluate — candidate vs serving version: held-out accuracy (on rows it never saw, does the candidate agree
               with the feedback more than the serving model — DPO: log π(chosen) − log π(rejected) rises; pointwise
               feedback: an answer rated above the rows' mean gets likelier, one below less likely?) and, with
               ``gate.reward``, a trusted reward of both models' samples on held-out prompts;
  5. gate    — improvement = mean trusted-reward gain (or held-out accuracy − ½ without one) ≥ ``gate.margin``; in
               engagement rounds with ``gate.ope``, also the candidate's off-policy engagement lower bound ≥ the
               serving value − ``gate.ope_tolerance`` (loop/gate.py); an alarm is recorded when the feedback (or
               the engagement estimate) says better and the trusted reward says worse;
  6. record  — register the candidate (parent, data window, metrics, status), promote or reject it, and mark the
               claimed feedback as used: one transaction (``LoopState.finish_round``). A server started with
               ``serve.follow_registry=true`` swaps to a promoted version between requests.

``run`` repeats rounds when ``min_events`` new events arrived or ``every_minutes`` passed (with at least one).
A gate that uses feedback from the same stream as the training data cannot catch feedback that is wrong throughout
(flipped labels pass their own held-out check); ``gate.reward`` is the trusted signal that does — e.g. a reward model
trained on vetted annotations, or a gold metric. See docs/guides/loop.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, field_validator

from rewardloop.algorithms import dpo, grpo, kto, reward_model
from rewardloop.algorithms.preference import sample_texts
from rewardloop.config import ConfigError, GenerationConfig, ModelConfig, Section, load_config
from rewardloop.envs.tasks import TaskConfig
from rewardloop.loop.gate import calibrated_q, completion_logps, logged_slates, ope_metrics
from rewardloop.models import load_pretrained
from rewardloop.rewards.composite import RewardSpec
from rewardloop.rewards.engagement import engagement_score
from rewardloop.store import Store
from rewardloop.store.export import engagement_rows, kto_rows, pairs_rows, ratings_rows
from rewardloop.store.rounds import LoopState

log = logging.getLogger(__name__)


@torch.no_grad()
def pair_margins(model, tokenizer, rows: list[dict], max_length: int) -> torch.Tensor:
    """DPO rows: log π(chosen) − log π(rejected) [N] — higher agrees with the feedback."""
    enc = dpo.encode_pairs(tokenizer, rows, max_length)
    device = next(model.parameters()).device
    chunks = [dpo.pair_logps(model, enc[i : i + 32], tokenizer.pad_token_id, device) for i in range(0, len(enc), 32)]
    return torch.cat([c - r for c, r in chunks])


def row_target(row: dict) -> float:
    """The feedback a pointwise row carries as one number: thumbs ±1, a rating, an engagement event's weight."""
    if "label" in row:
        return 1.0 if row["label"] else -1.0
    if "score" in row:
        return float(row["score"])
    return engagement_score({row["event"]: row["value"]})


def signed_logps(model, tokenizer, rows: list[dict], max_length: int) -> torch.Tensor:
    """Pointwise rows (thumbs, ratings, engagement): ± log π(completion) [N], + when the row's feedback is above the
    rows' mean — higher agrees with the feedback."""
    logps = completion_logps(model, tokenizer, [(r["prompt"], r["completion"]) for r in rows], max_length)  # [N]
    t = torch.tensor([row_target(r) for r in rows])  # [N]
    return torch.sign(t - t.mean()) * logps


@dataclass(frozen=True)
class Algo:
    """What a round needs of a learner: the feedback it reads, as which rows, how to train, how to score a row."""

    kinds: tuple[str, ...]  # feedback kinds claimed
    rows: Callable  # store.export row builder (store, skipped, ids=) → TRL rows
    ids: tuple[str, ...]  # the row's response-id fields (the held-out hash)
    texts: tuple[str, ...]  # the row's completion fields (an empty one is skipped)
    train: Callable  # (cfg, round, parent path, train rows, held-out rows, resume) → {"model_dir", ...}
    agreement: Callable  # (model, tokenizer, rows, max_length) → [N], higher = agrees more with the feedback


def trainer_config(config_cls: type, overrides: dict[str, Any], run_dir: Path, model: ModelConfig, task: TaskConfig):
    """``config_cls`` with the loop's ``overrides``, writing to ``run_dir``, on ``model`` and ``task``."""
    args = [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
    args += [f"run.root={run_dir.parent}", f"run.name={run_dir.name}", "run.progress=false", "task.name=reviews"]
    return load_config(config_cls, None, args).model_copy(update={"model": model, "task": task})


def offline(config_cls: type, train_fn: Callable) -> Callable:
    """DPO / KTO: the candidate trained directly on the round's rows."""

    def train(cfg, rnd, parent_path: str, rows: list, heldout: list, resume: bool) -> dict:
        run_dir = Path(rnd["run_dir"])
        task = TaskConfig(name="dataset", dataset=rows, test_dataset=heldout or rows[:1])
        tcfg = trainer_config(config_cls, cfg.trainer, run_dir, model_config(cfg, parent_path), task)
        return train_fn(tcfg, resume=resume and run_dir.exists())

    return train


def reward_then_policy(feedback: str) -> Callable:
    """Ratings / engagement: a reward model on the round's rows (``reward_trainer``; engagement weighted by inverse
    propensity), then GRPO from the serving version against it on the rows' prompts (``trainer``)."""

    def train(cfg, rnd, parent_path: str, rows: list, heldout: list, resume: bool) -> dict:
        run_dir, model = Path(rnd["run_dir"]), model_config(cfg, parent_path)
        task = TaskConfig(name="dataset", dataset=rows, test_dataset=heldout or rows[:1])
        rm_cfg = trainer_config(reward_model.RewardModelConfig, cfg.reward_trainer, run_dir / "reward", model, task)
        rm_cfg = rm_cfg.model_copy(update={"feedback": feedback})
        rm = reward_model.train(rm_cfg, resume=resume and (run_dir / "reward").exists())
        prompts = [{"prompt": p} for p in dict.fromkeys(r["prompt"] for r in rows if isinstance(r["prompt"], str))]
        test = [{"prompt": p} for p in dict.fromkeys(r["prompt"] for r in heldout if isinstance(r["prompt"], str))]
        task = TaskConfig(name="dataset", dataset=prompts, test_dataset=test or prompts[:1])
        pg_cfg = trainer_config(grpo.GRPOConfig, cfg.trainer, run_dir / "policy", model, task)
        pg_cfg = pg_cfg.model_copy(update={"rewards": [RewardSpec(model=str(rm["model_dir"]))]})
        return {**grpo.train(pg_cfg, resume=resume and (run_dir / "policy").exists()), "reward_model": rm["model_dir"]}

    return train


ALGOS = {
    "dpo": Algo(
        ("pairwise",),
        pairs_rows,
        ("chosen_id", "rejected_id"),
        ("chosen", "rejected"),
        offline(dpo.DPOConfig, dpo.train),
        pair_margins,
    ),
    "kto": Algo(
        ("thumbs",), kto_rows, ("response_id",), ("completion",), offline(kto.KTOConfig, kto.train), signed_logps
    ),
    "ratings": Algo(
        ("rating",), ratings_rows, ("response_id",), ("completion",), reward_then_policy("ratings"), signed_logps
    ),
    "engagement": Algo(
        ("engagement",),
        engagement_rows,
        ("response_id",),
        ("completion",),
        reward_then_policy("engagement"),
        signed_logps,
    ),
}


class LoopStore(Section):
    url: str = Field("sqlite:///rewardloop.db", description="the store the server logs to (as `rewardloop serve`)")


class GateConfig(Section):
    """When a candidate replaces the serving version."""

    margin: float = Field(0.0, description="promote only if the improvement is at least this (and above 0)")
    reward: RewardSpec | None = Field(
        None,
        description="a trusted reward of samples on held-out prompts: a function name / module:function, or "
        "{model: DIR} (a reward model trained on vetted labels), as in a trainer's `rewards:`",
    )
    n_prompts: int = Field(64, ge=1, description="samples per model for the trusted reward (held-out prompts, cycled)")
    gen: GenerationConfig = Field(
        GenerationConfig(max_new_tokens=40, temperature=1.0, stop=["\n"]), description="sampling for the reward gate"
    )
    seed: int = 1234
    ope: Literal["none", "snips", "dr"] = Field(
        "none",
        description="engagement rounds: an off-policy estimate of the candidate's engagement on the held-out logged "
        "events (snips | dr, loop/gate.py); promote only if its lower bound ≥ the serving value − ope_tolerance",
    )
    ope_level: float = Field(0.9, gt=0.0, lt=1.0, description="confidence level of the OPE interval")
    ope_tolerance: float = Field(
        0.0, ge=0.0, description="engagement units the candidate's lower bound may fall below the serving value"
    )

    @field_validator("reward", mode="before")
    @classmethod
    def _name_is_a_function(cls, v: Any) -> Any:
        return {"fn": v} if isinstance(v, str) or callable(v) else v


class LoopConfig(Section):
    """``rewardloop loop store.url=… model.path=…`` runs rounds as feedback arrives; ``loop round`` runs one if
    enough feedback is there; ``loop rollback`` returns to the previous version; ``loop status`` lists them."""

    action: Literal["run", "round", "rollback", "status"] = Field("run", description="run | round | rollback | status")
    store: LoopStore = LoopStore()
    model: ModelConfig = Field(
        default_factory=ModelConfig, description="the first serving version, when the store's registry has none"
    )
    algo: Literal["dpo", "kto", "ratings", "engagement"] = Field(
        "dpo",
        description="dpo: pairwise choices; kto: thumbs up / down; ratings / engagement: a reward model on them, "
        "then GRPO against it",
    )
    trainer: dict[str, Any] = Field(
        default_factory=dict, description="overrides for the learner's config (DPO / KTO / GRPO), e.g. {steps: 100}"
    )
    reward_trainer: dict[str, Any] = Field(
        default_factory=dict, description="ratings / engagement: overrides for the reward model's config"
    )
    min_events: int = Field(64, ge=1, description="a round starts when this many new events arrived ...")
    every_minutes: float | None = Field(None, gt=0, description="... or this long after the last round (≥ 1 event)")
    max_rounds: int | None = Field(None, ge=1, description="`run` stops after this many rounds (None: runs on)")
    poll_seconds: float = Field(5.0, gt=0, description="how often `run` looks for new feedback")
    heldout_fraction: float = Field(0.2, ge=0.0, lt=1.0, description="pairs held out of training for the gate")
    gate: GateConfig = GateConfig()
    root: str = Field("runs/loop", description="where each round's training run is written (ROOT/round-N)")


# -- 1. claim ---------------------------------------------------------------------------------------------------


def ensure_serving(cfg: LoopConfig, state: LoopState) -> dict[str, Any]:
    """The serving version; on a fresh store, ``cfg.model`` registered as ``v0`` and serving."""
    current = state.serving()
    if current is None:
        if not cfg.model.path:
            raise ConfigError("model.path: the loop starts from a saved model (the one the server runs); none given")
        state.store.register_model("v0", cfg.model.path, metrics={"source": "loop start"}, status="serving")
        current = state.serving()
    return current


def model_config(cfg: LoopConfig, path: str) -> ModelConfig:
    """The ModelConfig of a registered version: ``cfg.model`` with the version's directory."""
    return cfg.model.model_copy(update={"path": path})


def claim(cfg: LoopConfig, state: LoopState, parent: str, last_round_at: float | None) -> dict[str, Any] | None:
    """The open round, or a new one over the unclaimed feedback when it is due; None when it is not."""
    if (rnd := state.open_round()) is not None:
        return rnd
    ids = state.unclaimed(ALGOS[cfg.algo].kinds)
    timed_out = cfg.every_minutes is not None and last_round_at is not None
    timed_out = timed_out and time.monotonic() - last_round_at >= 60 * cfg.every_minutes
    if len(ids) < cfg.min_events and not (timed_out and ids):
        return None
    n = len(state.rounds()) + 1
    return state.start_round(cfg.algo, parent, ids, run_dir=str(Path(cfg.root) / f"round-{n}"))


# -- 2. data ----------------------------------------------------------------------------------------------------


def is_heldout(row: dict[str, Any], keys: tuple[str, ...], fraction: float) -> bool:
    """A stable coin flip per row (its response ids): the same rows are held out on a resume."""
    digest = hashlib.sha256(json.dumps(sorted(row[k] for k in keys)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def text_of(value: str | list) -> str:
    return value if isinstance(value, str) else value[-1]["content"]  # conversational: the assistant message


def round_data(store: Store, rnd: dict[str, Any], cfg: LoopConfig) -> tuple[list[dict], list[dict], dict]:
    algo, skipped = ALGOS[rnd["algo"]], Counter()
    rows = []
    for row in algo.rows(store, skipped, ids=rnd["feedback_ids"]):
        if all(text_of(row[k]).strip() for k in algo.texts):
            rows.append(row)
        else:  # an empty answer (the model ended at once) is no text to learn from
            skipped["empty_completion"] += 1
    heldout = [r for r in rows if is_heldout(r, algo.ids, cfg.heldout_fraction)]
    train = [r for r in rows if not is_heldout(r, algo.ids, cfg.heldout_fraction)]
    if not train or (cfg.heldout_fraction > 0 and not heldout):
        raise ConfigError(
            f"round {rnd['id']}: {len(rows)} usable rows ({dict(skipped)} skipped) give {len(train)} to train on and "
            f"{len(heldout)} held out; raise min_events or change heldout_fraction"
        )
    return train, heldout, dict(skipped)


# -- 3. train ---------------------------------------------------------------------------------------------------


def train_candidate(cfg: LoopConfig, rnd: dict, parent_path: str, train: list, heldout: list, resume: bool) -> dict:
    return ALGOS[rnd["algo"]].train(cfg, rnd, parent_path, train, heldout, resume)


# -- 4. evaluate ------------------------------------------------------------------------------------------------


def evaluate(
    cfg: LoopConfig,
    algo: str,
    parent_path: str,
    candidate_path: str,
    heldout: list,
    *,
    store: Store | None = None,
    train: list | None = None,
    reward_model: str | None = None,
) -> dict[str, float]:
    """Held-out accuracy: the share of held-out rows the candidate agrees with more than the serving model does
    (DPO: a larger log-ratio of chosen over rejected; KTO: a thumbed-up answer likelier, a thumbed-down one less
    likely); with ``gate.reward``, the trusted reward of both models' samples on held-out prompts; with ``gate.ope``
    in an engagement round, both models' off-policy engagement estimates on the held-out logged events."""
    parent, tokenizer = load_pretrained(model_config(cfg, parent_path))
    candidate, _ = load_pretrained(model_config(cfg, candidate_path))
    parent.eval(), candidate.eval()
    metrics: dict[str, float] = {"heldout_rows": float(len(heldout))}
    if heldout:
        agree = ALGOS[algo].agreement  # the round's learner (a resumed round keeps the one it started with)
        gain = agree(candidate, tokenizer, heldout, cfg.model.max_length) - agree(
            parent, tokenizer, heldout, cfg.model.max_length
        )
        metrics["heldout_accuracy"] = (gain > 0).float().mean().item()
    if cfg.gate.reward:
        reward = cfg.gate.reward.build(cfg.model.device)
        distinct = sorted({r["prompt"] for r in heldout if isinstance(r["prompt"], str)})
        prompts = [distinct[i % len(distinct)] for i in range(cfg.gate.n_prompts)]  # repeats sample anew
        scores = {}
        for name, model in (("parent", parent), ("candidate", candidate)):
            texts = sample_texts(model, tokenizer, prompts, cfg.gate.gen, seed=cfg.gate.seed)
            scores[name] = sum(reward(prompts=prompts, completions=texts)) / len(prompts)
        metrics |= {"reward_parent": scores["parent"], "reward_candidate": scores["candidate"]}
    if cfg.gate.ope != "none" and algo == "engagement" and heldout and store is not None:
        q = None
        if cfg.gate.ope == "dr":
            rm = RewardSpec(model=str(reward_model)).build(cfg.model.device)
            q = calibrated_q(lambda p, c: rm(prompts=p, completions=c), train or heldout)
        logs = logged_slates(store, heldout)
        metrics |= ope_metrics(
            parent, candidate, tokenizer, logs, cfg.gate.ope, cfg.model.max_length, q, cfg.gate.ope_level
        )
    return metrics


# -- 5. gate ----------------------------------------------------------------------------------------------------


def improvement(cfg: LoopConfig, metrics: dict[str, float]) -> float:
    """The trusted-reward gain; without a trusted reward the OPE engagement gain V̂(candidate) − V̂(serving), or
    else held-out accuracy − ½."""
    if cfg.gate.reward:
        return metrics["reward_candidate"] - metrics["reward_parent"]
    if "ope_candidate" in metrics:
        return metrics["ope_candidate"] - metrics["ope_serving"]
    return metrics.get("heldout_accuracy", 0.5) - 0.5


def ope_passes(cfg: LoopConfig, metrics: dict[str, float]) -> bool:
    """The candidate's engagement lower bound is at least the serving value − ``gate.ope_tolerance`` (True when no
    OPE was made)."""
    return "ope_lo" not in metrics or bool(metrics["ope_lo"] >= metrics["ope_serving"] - cfg.gate.ope_tolerance)


def decide(cfg: LoopConfig, metrics: dict[str, float]) -> str:
    """``promoted`` when the improvement is above 0 and at least ``gate.margin`` and the OPE check passes."""
    gain = improvement(cfg, metrics)
    return "promoted" if gain > 0 and gain >= cfg.gate.margin and ope_passes(cfg, metrics) else "rejected"


def proxy_gold_alarm(metrics: dict[str, float]) -> bool:
    """The feedback stream says better (held-out accuracy > ½, or the OPE engagement estimate above the serving
    value) while the trusted reward says worse: the stream is being gamed or poisoned, or the candidate learned to
    please it (engagement hacking) at the trusted signal's expense."""
    proxy_up = metrics.get("heldout_accuracy", 0.5) > 0.5 or metrics.get("ope_candidate", 0.0) > metrics.get(
        "ope_serving", 0.0
    )
    return proxy_up and metrics.get("reward_candidate", 0.0) < metrics.get("reward_parent", 0.0)


# -- the round --------------------------------------------------------------------------------------------------


def run_round(cfg: LoopConfig, store: Store, last_round_at: float | None = None) -> dict[str, Any] | None:
    """One round if one is due (or open); the finished round's record, or None."""
    state = LoopState(store)
    ensure_serving(cfg, state)
    open_before = state.open_round() is not None
    rnd = claim(cfg, state, state.serving()["name"], last_round_at)  # 1
    if rnd is None:
        return None
    parent_path = next(m["path"] for m in store.models() if m["name"] == rnd["parent"])
    train, heldout, skipped = round_data(store, rnd, cfg)  # 2
    out = train_candidate(cfg, rnd, parent_path, train, heldout, resume=open_before)  # 3
    rm = out.get("reward_model")
    metrics = evaluate(
        cfg, rnd["algo"], parent_path, str(out["model_dir"]), heldout, store=store, train=train, reward_model=rm
    )  # 4
    gain, status = improvement(cfg, metrics), decide(cfg, metrics)  # 5
    metrics |= {"improvement": gain, "train_rows": float(len(train)), "skipped": skipped}
    if "ope_lo" in metrics:
        metrics["ope_pass"] = ope_passes(cfg, metrics)
    if alarm := proxy_gold_alarm(metrics):
        metrics["alarm"] = "feedback says better, trusted reward says worse"
        log.warning("loop round %s: %s (%s)", rnd["id"], metrics["alarm"], metrics)
    name = f"{Path(rnd['run_dir']).name}"
    record = state.finish_round(rnd["id"], status, {"name": name, "path": str(out["model_dir"])}, metrics)  # 6
    print(f"loop {name}: {rnd['algo']} on {len(train)} rows, improvement {gain:+.4f} → {status}" + " ALARM" * alarm)
    return record


def run(cfg: LoopConfig, resume: bool = False) -> Any:
    """The ``rewardloop loop`` command (``resume`` is ignored: an open round is always resumed)."""
    with Store.open(cfg.store.url) as store:
        state = LoopState(store)
        if cfg.action == "rollback":
            now = state.rollback()
            print(f"rolled back: {now['name']} ({now['path']}) serves again")
            return now
        if cfg.action == "status":
            return {"serving": state.serving(), "rounds": state.rounds(), "models": store.models()}
        if cfg.action == "round":
            return run_round(cfg, store)
        done, last = 0, time.monotonic()
        while cfg.max_rounds is None or done < cfg.max_rounds:
            if run_round(cfg, store, last) is not None:
                done, last = done + 1, time.monotonic()
            else:
                time.sleep(cfg.poll_seconds)
        return {"rounds": state.rounds()[-done:]}
