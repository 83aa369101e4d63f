"""Worker (c): TRL 1.12's PPOTrainer (``trl.experimental.ppo``) on four saved tiny models, in benchmarks/.venv-trl112.

Spec: {"policy_dir", "value_dir", "reward_dir" (sequence-classification models, one label), "data" (JSON with
"train" rows {prompt, answer}), "batch_size" (episodes per update), "max_new_tokens", "epochs", "kl_coef",
"vf_coef", "lr", "updates", "seed", "threads", "out_dir", optional "bf16" (default false) and
"gradient_checkpointing" (default true, TRL's own default)}. One mini-batch per update (num_mini_batches = 1), CPU. Update time = wall time between consecutive ``on_step_end`` callbacks (the first from ``on_train_begin``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
from trl.experimental.ppo import PPOConfig, PPOTrainer

from benchmarks.common import clock, emit, read_spec, setup_torch


class Clock(TrainerCallback):
    """Wall seconds of each PPO update."""

    def __init__(self) -> None:
        self.update_times: list[float] = []
        self._last = 0.0

    def on_train_begin(self, args, state, control, **kw):
        self._last = clock()

    def on_step_end(self, args, state, control, **kw):
        now = clock()
        self.update_times.append(now - self._last)
        self._last = now


def main() -> None:
    spec = read_spec()
    setup_torch(spec.get("threads"), spec["seed"])
    data = json.loads(Path(spec["data"]).read_text())
    tok = AutoTokenizer.from_pretrained(spec["policy_dir"], padding_side="left")
    f32 = {"dtype": torch.float32}
    policy = AutoModelForCausalLM.from_pretrained(spec["policy_dir"], **f32)
    ref = AutoModelForCausalLM.from_pretrained(spec["policy_dir"], **f32)
    value = AutoModelForSequenceClassification.from_pretrained(spec["value_dir"], num_labels=1, **f32)
    reward = AutoModelForSequenceClassification.from_pretrained(spec["reward_dir"], num_labels=1, **f32)
    for m in (value, reward):
        m.config.pad_token_id = tok.pad_token_id

    def tokenize(rows):
        return Dataset.from_list([{"input_ids": tok(r["prompt"])["input_ids"]} for r in rows])

    B = spec["batch_size"]
    args = PPOConfig(
        output_dir=spec["out_dir"],
        use_cpu=True,
        bf16=spec.get("bf16", False),  # True: bf16 autocast on CPU (accelerate)
        fp16=False,
        gradient_checkpointing=spec.get("gradient_checkpointing", True),  # TRL's own default
        per_device_train_batch_size=B,
        gradient_accumulation_steps=1,
        num_mini_batches=1,
        num_ppo_epochs=spec["epochs"],
        total_episodes=B * spec["updates"],
        local_rollout_forward_batch_size=B,
        response_length=spec["max_new_tokens"],
        temperature=1.0,
        kl_coef=spec["kl_coef"],
        vf_coef=spec["vf_coef"],
        cliprange=0.2,
        cliprange_value=0.2,
        gamma=1.0,
        lam=0.95,
        learning_rate=spec["lr"],
        lr_scheduler_type="constant",
        num_sample_generations=0,
        seed=spec["seed"],
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        logging_steps=1,
    )
    clock = Clock()
    trainer = PPOTrainer(
        args=args,
        processing_class=tok,
        model=policy,
        ref_model=ref,
        reward_model=reward,
        value_model=value,
        train_dataset=tokenize(data["train"][: max(4 * B, 64)]),
        eval_dataset=tokenize(data["train"][:B]),
        callbacks=[clock],
    )
    trainer.train()
    scores = [h["objective/scores"] for h in trainer.state.log_history if "objective/scores" in h]
    emit({"update_seconds": clock.update_times, "episodes_per_update": B, "scores": scores})


if __name__ == "__main__":
    main()
