"""``rewardloop quickstart``: the whole loop on a laptop CPU in a few minutes.

1. build the project's tokenizer and a tiny Llama (≈1M parameters) — nothing is downloaded;
2. SFT on ``strings`` (``reverse: c a t d =`` → ``d t a c``) from clean demonstrations: the maximum-likelihood
   baseline, stopped early (120 steps) as a model trained on limited data would be;
3. PPO from the SFT model with the verifiable exact-match reward: RL improves the model's own attempts at reversing
   training strings, and the gain carries over to held-out strings — nothing about the format is left to fix;
4. print test accuracy before and after RL, and where the run, its plots and the models are.

Every stage is the ordinary command underneath (``rewardloop sft`` / ``rewardloop ppo``, the presets
configs/sft/strings.yaml and configs/ppo/strings.yaml); override any field with
``rewardloop quickstart sft.steps=300 ppo.steps=20``.
"""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import Field

from rewardloop.algorithms.ppo import PPOConfig
from rewardloop.algorithms.sft import SFTConfig
from rewardloop.config import GenerationConfig, ModelConfig, OptimConfig, RunConfig, Section, load_config
from rewardloop.envs.tasks import TaskConfig

# reverse 3–6 letters from a–j; clean demonstrations; exact match on held-out strings
TASK = TaskConfig(name="strings", n_train=4000, n_test=200, string_ops=["reverse"], string_length=(3, 6))


class QuickstartConfig(Section):
    root: str = "runs"
    name: str | None = Field(None, description="run directory name (default: quickstart-<timestamp>)")
    sft: SFTConfig = SFTConfig(
        model=ModelConfig(preset="llama-1m", max_length=32),
        task=TASK,
        optim=OptimConfig(lr=3e-3, warmup_steps=50, schedule="cosine"),
        gen=GenerationConfig(max_new_tokens=8, temperature=0.0),
        steps=120,
        batch_size=64,
        eval_every=40,
    )
    ppo: PPOConfig = PPOConfig(
        model=ModelConfig(max_length=32),
        task=TASK,
        gen=GenerationConfig(max_new_tokens=8, temperature=0.5),
        eval_gen=GenerationConfig(max_new_tokens=8, temperature=0.0),
        optim=OptimConfig(lr=1e-4, warmup_steps=5),
        critic_optim=OptimConfig(lr=1e-3, warmup_steps=5),
        critic="separate",
        steps=120,
        batch_size=64,
        mini_batch_size=32,
        micro_batch_size=32,
        epochs=2,
        lam=1.0,
        kl_coef=0.02,
        target_kl=0.1,
        eval_every=30,
    )


def quickstart(overrides: list[str] | None = None) -> dict:
    """Run the quickstart; returns {"sft": ..., "ppo": ..., "before": acc, "after": acc, "run_dir": Path}."""
    cfg = load_config(QuickstartConfig, None, overrides or [])
    root = Path(cfg.root) / (cfg.name or f"quickstart-{time.strftime('%Y%m%d-%H%M%S')}")
    t0 = time.time()
    print(f"rewardloop quickstart → {root}")
    print(
        f"[1/2] SFT: a tiny {cfg.sft.model.preset} learns to reverse strings of letters from clean demonstrations "
        f"({cfg.sft.steps} steps, stopped early)"
    )
    sft_cfg = cfg.sft.model_copy(update={"run": RunConfig(root=str(root), name="sft", seed=cfg.sft.run.seed)})
    from rewardloop.algorithms import ppo, sft

    base = sft.train(sft_cfg)
    before = base["final"]["eval/accuracy"]
    print(f"      SFT test accuracy (exact match on held-out strings): {before:.1%}  ({time.time() - t0:.0f}s)")

    print(f"[2/2] PPO from the SFT model, reward = exact match ({cfg.ppo.steps} steps × {cfg.ppo.batch_size} episodes)")
    ppo_cfg = cfg.ppo.model_copy(
        update={
            "model": cfg.ppo.model.model_copy(update={"path": str(base["model_dir"])}),
            "run": RunConfig(root=str(root), name="ppo", seed=cfg.ppo.run.seed),
        }
    )
    rl = ppo.train(ppo_cfg)
    after = rl["final"]["eval/accuracy"]
    print(f"      PPO test accuracy: {after:.1%}  (SFT {before:.1%}; total {time.time() - t0:.0f}s)")

    from rewardloop.report import report

    report(root)
    value = root / "ppo" / "final" / "value"
    print(
        f"\nrun directory : {root}\n"
        f"plots         : {root}/sft/plots, {root}/ppo/plots  (rewardloop report {root})\n"
        f"SFT model     : {base['model_dir']}\n"
        f"PPO policy    : {rl.get('model_dir', root / 'ppo' / 'final' / 'policy')}\n"
        f"critic        : {value}  (rewardloop value {value} 'reverse: c a b d =')"
    )
    return {"sft": base, "ppo": rl, "before": before, "after": after, "run_dir": root}
