"""Worker (b, e): TRL's GRPOTrainer on a saved tiny model, run in benchmarks/.venv-trl (no rewardloop import).

Spec: {"model_dir", "data" (JSON file with "train"/"test" rows {prompt, answer}), "prompts_per_step" N,
"group_size" G, "max_new_tokens", "beta", "lr", "steps", "seed", "threads", "eval_every" (0 = never),
"eval_size", "eval_tokens", "out_dir", optional "bf16" (default false) and "gradient_checkpointing" (default true,
TRL's own default), "temperature" (default 1.0), "warmup_steps" (default 0), "epsilon" / "epsilon_high" (the clip
range, default TRL's 0.2 / none), "cpu_budget" (stop once the timed steps reach this many seconds: with
BENCH_CLOCK=cpu, CPU-seconds; evaluated there)}. One optimizer step per generation batch of N·G completions (TRL: per_device_train_batch_size
= N·G, gradient_accumulation_steps = steps_per_generation = 1), CPU.
Step time = on_step_begin → on_step_end (generation + scoring + reference + update); greedy evaluation runs
outside that window and is not counted.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from benchmarks.common import clock, emit, exact_match, read_spec, setup_torch


@torch.no_grad()
def greedy_accuracy(model, tok, rows: list[dict], max_new_tokens: int, batch_size: int = 64) -> float:
    """Exact-match accuracy of greedy completions (left-padded batches, stop at EOS)."""
    was_training = model.training
    model.eval()
    tok.padding_side = "left"
    correct = 0.0
    for i in range(0, len(rows), batch_size):
        chunk = rows[i : i + batch_size]
        enc = tok([r["prompt"] for r in chunk], return_tensors="pt", padding=True)
        out = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id)
        texts = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        correct += sum(exact_match(texts, [r["answer"] for r in chunk]))
    model.train(was_training)
    return correct / len(rows)


class Clock(TrainerCallback):
    """Per-step wall time, and greedy test accuracy every ``eval_every`` steps against training seconds so far."""

    def __init__(self, tok, test_rows, eval_every: int, eval_tokens: int, budget: float | None = None) -> None:
        self.tok, self.test_rows, self.eval_every, self.eval_tokens = tok, test_rows, eval_every, eval_tokens
        self.budget = budget
        self.step_times: list[float] = []
        self.curve: list[dict] = []
        self._t0 = 0.0

    def on_step_begin(self, args, state, control, **kw):
        self._t0 = clock()

    def on_step_end(self, args, state, control, model=None, **kw):
        self.step_times.append(clock() - self._t0)
        over = self.budget is not None and sum(self.step_times) >= self.budget
        if over:
            control.should_training_stop = True
        if (self.eval_every and state.global_step % self.eval_every == 0) or over:
            self.evaluate(model, state.global_step)

    def evaluate(self, model, step: int) -> None:
        acc = greedy_accuracy(model, self.tok, self.test_rows, self.eval_tokens)
        self.curve.append({"step": step, "train_seconds": sum(self.step_times), "accuracy": acc})


def main() -> None:
    spec = read_spec()
    setup_torch(spec.get("threads"), spec["seed"])
    data = json.loads(Path(spec["data"]).read_text())
    tok = AutoTokenizer.from_pretrained(spec["model_dir"])
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32)
    N, G = spec["prompts_per_step"], spec["group_size"]
    args = GRPOConfig(
        output_dir=spec["out_dir"],
        use_cpu=True,
        bf16=spec.get("bf16", False),  # True: bf16 autocast on CPU (accelerate)
        fp16=False,
        gradient_checkpointing=spec.get("gradient_checkpointing", True),  # TRL's own default
        max_steps=spec["steps"],
        per_device_train_batch_size=N * G,
        gradient_accumulation_steps=1,
        num_generations=G,
        max_completion_length=spec["max_new_tokens"],
        temperature=spec.get("temperature", 1.0),
        top_k=0,
        top_p=1.0,
        beta=spec["beta"],
        loss_type="dapo",
        epsilon=spec.get("epsilon", 0.2),
        epsilon_high=spec.get("epsilon_high"),
        learning_rate=spec["lr"],
        lr_scheduler_type="constant_with_warmup",  # = constant when warmup_steps is 0
        warmup_steps=spec.get("warmup_steps", 0),
        adam_beta1=0.9,
        adam_beta2=0.95,
        weight_decay=0.0,
        max_grad_norm=1.0,
        seed=spec["seed"],
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )

    def reward(prompts, completions, answer, **_):
        return exact_match(completions, answer)

    test_rows = data["test"][: spec.get("eval_size", 100)]
    clock = Clock(tok, test_rows, spec.get("eval_every", 0), spec["eval_tokens"], spec.get("cpu_budget"))
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward,
        args=args,
        train_dataset=Dataset.from_list(data["train"]),
        processing_class=tok,
        callbacks=[clock],
    )
    if clock.eval_every:
        clock.evaluate(trainer.model, 0)
    trainer.train()
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    emit(
        {
            "step_seconds": clock.step_times,
            "rewards": rewards,
            "completions_per_step": N * G,
            "curve": clock.curve,
            "params": sum(p.numel() for p in model.parameters()),
        }
    )


if __name__ == "__main__":
    main()
