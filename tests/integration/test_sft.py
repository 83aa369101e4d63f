"""SFT learns: arithmetic eval loss falls and test accuracy rises; user prompt/completion and plain-text data train."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rewardloop.algorithms.common import evaluate_generation
from rewardloop.algorithms.sft import SFTConfig, train
from rewardloop.config import GenerationConfig, ModelConfig, OptimConfig, RunConfig
from rewardloop.data.tokenize import IGNORE, tokenize_row
from rewardloop.envs.tasks import TaskConfig, load_task
from rewardloop.runs import read_metrics


def test_tokenize_row_masks_the_prompt_and_appends_eos(tokenizer):
    ids, labels = tokenize_row(tokenizer, {"prompt": "37+48=", "completion": "85"}, 32)
    prompt = tokenizer("37+48=")["input_ids"]
    assert ids == [*prompt, *tokenizer("85")["input_ids"], tokenizer.eos_token_id]
    assert labels == [IGNORE] * len(prompt) + ids[len(prompt) :]
    ids, labels = tokenize_row(tokenizer, {"text": "the lamp is great."}, 32)
    assert ids == labels and ids[-1] == tokenizer.eos_token_id
    with pytest.raises(ValueError, match="max_length=8"):
        tokenize_row(tokenizer, {"text": "a long line of text " * 5}, 8)


@pytest.fixture(scope="module")
def arithmetic_run(tmp_path_factory):
    """llama-1m, 200 SFT steps on one-digit addition (70 train / 30 held-out problems)."""
    cfg = SFTConfig(
        model=ModelConfig(preset="llama-1m", max_length=16, device="cpu"),
        task=TaskConfig(digits=(1, 1), n_train=70, n_test=30),
        optim=OptimConfig(lr=3e-3, warmup_steps=20, schedule="cosine"),
        gen=GenerationConfig(max_new_tokens=4, temperature=0.0),
        run=RunConfig(root=str(tmp_path_factory.mktemp("runs")), name="arith", progress=False),
        steps=200,
        batch_size=64,
        eval_every=100,
        eval_size=30,
    )
    return cfg, train(cfg)


def test_sft_on_arithmetic_lowers_eval_loss_and_raises_accuracy(arithmetic_run):
    _, result = arithmetic_run
    initial, final = result["initial"], result["final"]
    assert initial["eval/accuracy"] <= 0.1
    assert final["eval/loss"] < 0.5 * initial["eval/loss"]
    assert final["eval/accuracy"] >= 0.5, final  # held-out sums the model never saw
    evals = [r["step"] for r in read_metrics(result["run_dir"]) if "eval/loss" in r]
    assert evals == [0, 100, 200]


def test_sft_saves_a_model_that_reproduces_the_accuracy(arithmetic_run):
    cfg, result = arithmetic_run
    assert (result["run_dir"] / "config.yaml").exists()
    model = AutoModelForCausalLM.from_pretrained(result["model_dir"])
    tok = AutoTokenizer.from_pretrained(result["model_dir"])
    task = load_task(cfg.task, kind="sft")
    res = evaluate_generation(model, tok, task, task.test[: cfg.eval_size], cfg.gen)
    assert res["accuracy"] == result["final"]["eval/accuracy"]


def sft_on_file(tmp_path, rows: list[dict], steps: int = 30, **task) -> dict:
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = SFTConfig(
        model=ModelConfig(preset="llama-1m", max_length=32, device="cpu"),
        task=TaskConfig(name="dataset", path=str(path), n_test=4, **task),
        optim=OptimConfig(lr=3e-3),
        gen=GenerationConfig(max_new_tokens=4, temperature=0.0),
        run=RunConfig(root=str(tmp_path / "runs"), name="file", progress=False),
        steps=steps,
        batch_size=8,
        eval_every=steps,
        eval_size=4,
    )
    return train(cfg)


def test_sft_on_a_prompt_completion_jsonl_file(tmp_path):
    colours = ["red", "blue", "green", "black", "white"]
    rows = [
        {"prompt": f"the {c} {p} is", "completion": f" {c}.", "answer": f" {c}."}
        for p in ["lamp", "mug", "kettle", "watch"]
        for c in colours
    ]  # the held-out last rows are watches in colours seen with other products
    result = sft_on_file(tmp_path, rows, reward="exact_match")
    assert result["final"]["eval/loss"] < 0.5 * result["initial"]["eval/loss"]
    assert "eval/accuracy" in result["final"]  # a configured reward is evaluated on generations
    assert AutoModelForCausalLM.from_pretrained(result["model_dir"]) is not None


def test_sft_on_plain_text_rows(tmp_path):
    rows = [{"text": f"the {p} is great. i love the {p}."} for p in ["lamp", "mug", "kettle", "watch", "camera"] * 4]
    result = sft_on_file(tmp_path, rows)
    assert result["final"]["eval/loss"] < 0.5 * result["initial"]["eval/loss"]
    assert set(result["final"]) >= {"eval/loss", "train/loss"} and "eval/accuracy" not in result["final"]
    assert torch.isfinite(torch.tensor(result["final"]["train/loss"]))
