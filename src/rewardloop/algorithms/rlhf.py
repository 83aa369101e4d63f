"""The RLHF pipeline (InstructGPT, Ouyang et al. 2022 §3): SFT → preference pairs → reward model → PPO → evaluate.

Each stage runs in its own subdirectory of the run directory (``sft/``, ``pairs/``, ``reward/``, ``ppo/``,
``eval/``) and writes ``<stage>/done.json`` when finished; ``--resume`` skips finished stages and resumes the
unfinished one from its own checkpoint. Preference pairs come from the SFT policy (two samples per prompt, labelled
by the ``reviews`` simulated annotator), from template reviews, or from a user's preference file. The final
evaluation compares the PPO policy with the SFT policy on held-out prompts: win rate judged by the held-out *gold*
annotator (noise-free utility), mean reward-model score, gold reward, and KL(π_PPO ‖ π_SFT) per response.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from rewardloop.algorithms import ppo as ppo_mod
from rewardloop.algorithms import reward_model as rm_mod
from rewardloop.algorithms import sft as sft_mod
from rewardloop.config import GenerationConfig, ModelConfig, RunConfig, Section
from rewardloop.data import save_jsonl
from rewardloop.envs.tasks import TaskConfig, load_task
from rewardloop.models import load_pretrained
from rewardloop.rewards.composite import RewardSpec
from rewardloop.rewards.model import RewardModelScorer
from rewardloop.rollout import batched_logprobs, generate
from rewardloop.runs import RunDir


class PairsConfig(Section):
    source: Literal["policy", "templates", "both", "file"] = "both"
    path: str | None = Field(None, description="source=file: a preference file (TRL format)")
    n_policy: int = Field(1500, ge=0, description="pairs sampled from the SFT policy (2 samples per prompt)")
    n_templates: int = Field(1500, ge=0, description="pairs over template reviews")
    noise: float = Field(0.1, ge=0.0, le=0.5, description="annotator label-flip probability")
    test_size: int = Field(300, ge=1, description="held-out pairs, labelled by the gold annotator")
    gen: GenerationConfig = GenerationConfig(max_new_tokens=40, temperature=1.0)


class RLHFConfig(Section):
    model: ModelConfig = ModelConfig(preset="llama-1m", max_length=64)
    task: TaskConfig = TaskConfig(name="reviews", n_train=2000)
    run: RunConfig = RunConfig()
    sft: sft_mod.SFTConfig = sft_mod.SFTConfig()
    pairs: PairsConfig = PairsConfig()
    reward: rm_mod.RewardModelConfig = rm_mod.RewardModelConfig()
    ppo: ppo_mod.PPOConfig = ppo_mod.PPOConfig()
    eval_size: int = Field(200, ge=1, description="held-out prompts for the final comparison")
    eval_gen: GenerationConfig = GenerationConfig(max_new_tokens=40, temperature=1.0)


def _stage_run(cfg: RLHFConfig, run_dir: Path, name: str) -> RunConfig:
    return cfg.run.model_copy(update={"root": str(run_dir), "name": name})


def _done(run_dir: Path, stage: str) -> dict | None:
    path = run_dir / stage / "done.json"
    return json.loads(path.read_text()) if path.exists() else None


def _finish(run_dir: Path, stage: str, result: dict[str, Any]) -> dict[str, Any]:
    out = {k: (str(v) if isinstance(v, Path) else v) for k, v in result.items() if k != "members"}
    (run_dir / stage).mkdir(parents=True, exist_ok=True)
    (run_dir / stage / "done.json").write_text(json.dumps(out, indent=1, default=str))
    return out


@torch.no_grad()
def policy_pairs(model_dir: str, cfg: RLHFConfig, prompts: list[str], n: int, noise: float, seed: int) -> list[dict]:
    """``n`` pairs: two samples of the SFT policy per prompt, labelled by a simulated annotator."""
    from rewardloop.envs.reviews import SimulatedAnnotator

    model, tok = load_pretrained(cfg.model.model_copy(update={"path": model_dir}))
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    annotator = SimulatedAnnotator(noise=noise, seed=seed)
    rows: list[dict] = []
    rng = random.Random(seed)
    while len(rows) < n:
        batch = [rng.choice(prompts) for _ in range(64)]
        a = generate(model, tok, batch, cfg.pairs.gen, generator=gen).responses
        b = generate(model, tok, batch, cfg.pairs.gen, generator=gen).responses
        rows += annotator.preference_pairs(batch, a, b)
    return rows[:n]


def make_pairs(cfg: RLHFConfig, sft_dir: str, run_dir: Path) -> dict[str, Any]:
    """Write pairs/train.jsonl and pairs/test.jsonl (test labelled by the noise-free gold annotator)."""
    from rewardloop.envs.reviews import annotator_pairs_from_templates

    pc, seed = cfg.pairs, cfg.run.seed
    if pc.source == "file":
        if not pc.path:
            raise ValueError("pairs.source 'file' needs pairs.path (a preference file with prompt/chosen/rejected)")
        return {"train": pc.path, "test": None}
    prompts = sorted({r["prompt"] for r in load_task(cfg.task, kind="prompt").train})
    train: list[dict] = []
    test: list[dict] = []
    if pc.source in ("policy", "both"):
        train += policy_pairs(sft_dir, cfg, prompts, pc.n_policy, pc.noise, seed)
        test += rm_mod.strict_pairs(policy_pairs(sft_dir, cfg, prompts, pc.test_size // 2, 0.0, seed + 1))
    if pc.source in ("templates", "both"):
        train += annotator_pairs_from_templates(seed, pc.n_templates, noise=pc.noise)
        more = annotator_pairs_from_templates(seed + 7919, 2 * (pc.test_size - len(test)), noise=0.0)
        test += rm_mod.strict_pairs(more)[: pc.test_size - len(test)]
    random.Random(seed).shuffle(train)
    out = run_dir / "pairs"
    out.mkdir(parents=True, exist_ok=True)
    save_jsonl(train, out / "train.jsonl")
    save_jsonl(test, out / "test.jsonl")
    return {"train": str(out / "train.jsonl"), "test": str(out / "test.jsonl"), "n_train": len(train)}


@torch.no_grad()
def compare(cfg: RLHFConfig, sft_dir: str, ppo_dir: str, rm_dir: str) -> dict[str, float]:
    """Gold-annotator win rate of PPO over SFT, RM scores, gold rewards and KL(π_PPO ‖ π_SFT) on held-out prompts."""
    from rewardloop.envs.reviews import SimulatedAnnotator, gold_win_rate
    from rewardloop.rewards.reviews import reviews_reward

    task = load_task(cfg.task, kind="prompt")
    rows = [task.test[i % len(task.test)] for i in range(cfg.eval_size)]
    prompts = [r["prompt"] for r in rows]
    texts, logps = {}, {}
    for name, path in (("sft", sft_dir), ("ppo", ppo_dir)):
        model, tok = load_pretrained(cfg.model.model_copy(update={"path": path}))
        gen = torch.Generator(device=next(model.parameters()).device).manual_seed(cfg.run.seed)
        ro = generate(model, tok, prompts, cfg.eval_gen, generator=gen)
        texts[name] = ro.responses
        if name == "ppo":  # KL(π_PPO ‖ π_SFT) ≈ mean over PPO samples of Σ_t log π_PPO − log π_SFT (k1, per response)
            sft_model, _ = load_pretrained(cfg.model.model_copy(update={"path": sft_dir}))
            n = ro.response_ids.shape[1]
            temp = cfg.eval_gen.temperature or 1.0
            lp_sft = batched_logprobs(sft_model, ro.input_ids, ro.attention_mask, n, temp)
            logps = {"ppo": ro.logprobs, "sft": lp_sft, "mask": ro.response_mask.float()}
    rm = RewardModelScorer(rm_dir)
    kl = ((logps["ppo"] - logps["sft"]) * logps["mask"]).sum(1).mean()
    return {
        "gold_win_rate": gold_win_rate(SimulatedAnnotator(noise=0.0), prompts, texts["ppo"], texts["sft"]),
        "rm_score/ppo": sum(rm(prompts, texts["ppo"])) / len(prompts),
        "rm_score/sft": sum(rm(prompts, texts["sft"])) / len(prompts),
        "gold_reward/ppo": sum(reviews_reward(prompts, texts["ppo"])) / len(prompts),
        "gold_reward/sft": sum(reviews_reward(prompts, texts["sft"])) / len(prompts),
        "kl_to_sft": float(kl),
        "examples": [
            {"prompt": p, "sft": s, "ppo": q}
            for p, s, q in list(zip(prompts, texts["sft"], texts["ppo"], strict=True))[:8]
        ],
    }


def run(cfg: RLHFConfig, resume: bool = False) -> dict[str, Any]:
    """SFT → pairs → reward model → PPO → evaluation; returns every stage's summary and the comparison."""
    # 1. The pipeline's run directory; every stage writes into its own subdirectory.
    top = RunDir.open(cfg.run, "rlhf", cfg, resume=resume)
    d = top.path
    results: dict[str, Any] = {"run_dir": d}
    # 2. SFT on the task's demonstrations.
    if (res := _done(d, "sft")) is None or not resume:
        sft_cfg = cfg.sft.model_copy(update={"model": cfg.model, "task": cfg.task, "run": _stage_run(cfg, d, "sft")})
        res = _finish(d, "sft", sft_mod.train(sft_cfg, resume=resume))
    results["sft"], sft_dir = res, res["model_dir"]
    # 3. Preference pairs labelled by the simulated annotator (or a user's file).
    if (res := _done(d, "pairs")) is None or not resume:
        res = _finish(d, "pairs", make_pairs(cfg, sft_dir, d))
    results["pairs"] = res
    # 4. Reward model, initialised from the SFT policy (InstructGPT §3.5).
    if (res := _done(d, "reward")) is None or not resume:
        pairs = TaskConfig(name="dataset", path=res_pairs(results), test_path=results["pairs"]["test"])
        rm_cfg = cfg.reward.model_copy(
            update={"model": cfg.model.model_copy(update={"path": sft_dir}), "task": pairs,
                    "run": _stage_run(cfg, d, "reward")}
        )  # fmt: skip
        res = _finish(d, "reward", rm_mod.train(rm_cfg, resume=resume))
    results["reward"], rm_dir = res, res["model_dir"]
    # 5. PPO against the reward model, KL-regularised toward the SFT policy.
    if (res := _done(d, "ppo")) is None or not resume:
        # The policy sees only the reward model (plus any reward functions the user added); eval/reward stays gold.
        rewards = [s for s in cfg.ppo.rewards if s.model is None] + [RewardSpec(model=str(rm_dir))]
        ppo_cfg = cfg.ppo.model_copy(
            update={"model": cfg.model.model_copy(update={"path": sft_dir}), "task": cfg.task, "rewards": rewards,
                    "task_reward_weight": 0.0, "run": _stage_run(cfg, d, "ppo")}
        )  # fmt: skip
        res = _finish(d, "ppo", ppo_mod.train(ppo_cfg, resume=resume))
    results["ppo"] = res
    # 6. Evaluate PPO against SFT with the held-out gold annotator.
    if (res := _done(d, "eval")) is None or not resume:
        res = _finish(d, "eval", compare(cfg, sft_dir, results["ppo"]["model_dir"], rm_dir))
    results["eval"] = res
    top.log(0, {k: v for k, v in res.items() if isinstance(v, float)})
    top.close()
    return results


def res_pairs(results: dict[str, Any]) -> str:
    return results["pairs"]["train"]


train = run  # the CLI calls ``train(cfg, resume)`` for every command
