"""A reward plug-in loaded by file path from outside the package drives a GRPO run."""

from __future__ import annotations

import json
import textwrap

import torch

from rewardloop.algorithms.grpo import GRPOConfig, train
from rewardloop.config import load_config
from rewardloop.models import load_pretrained
from rewardloop.runs import read_metrics

PLUGIN = '''
import json

CALLS = {calls!r}


def fewer_chars(prompts, completions, *, answer, **_):
    """Shorter responses score higher: -characters / 20. Records every call (with the dataset column it got)."""
    with open(CALLS, "a") as f:
        f.write(json.dumps({{"n": len(completions), "answer": answer[0], "prompt": prompts[0]}}) + "\\n")
    return [-len(c) / 20 for c in completions]
'''


def test_file_plugin_reward_drives_training(tmp_path):
    plugin_dir = tmp_path / "user_code"  # outside the package and not on sys.path
    plugin_dir.mkdir()
    calls = tmp_path / "calls.jsonl"
    (plugin_dir / "my_rewards.py").write_text(textwrap.dedent(PLUGIN.format(calls=str(calls))))
    cfg = load_config(
        GRPOConfig,
        None,
        [
            f"task.reward={plugin_dir / 'my_rewards.py'}:fewer_chars",
            "task.n_train=64",
            "task.n_test=8",
            "model.max_length=32",
            "gen.max_new_tokens=6",
            "eval_gen.max_new_tokens=6",
            "prompts_per_step=8",
            "group_size=4",
            "steps=8",
            "eval_every=8",
            "eval_size=8",
            "optim.lr=3e-3",
            f"run.root={tmp_path}",
            "run.name=plugin",
            "run.progress=false",
        ],
    )
    out = train(cfg)

    # the plug-in was called by the loop, with the task's `answer` column
    records = [json.loads(line) for line in calls.read_text().splitlines()]
    assert sum(r["n"] for r in records) >= 8 * 8 * 4  # every training sample was scored by it
    assert all(r["answer"] is not None and r["prompt"].endswith("=") for r in records)

    # its values are the logged reward, and optimising it moved the policy toward shorter responses
    rows = [r for r in read_metrics(out["run_dir"]) if "reward/mean" in r]
    assert all(r["reward/task"] <= 0 for r in rows)
    first = sum(r["reward/mean"] for r in rows[:3]) / 3
    last = sum(r["reward/mean"] for r in rows[-3:]) / 3
    assert last > first, (first, last)
    torch.manual_seed(cfg.run.seed)
    start, _ = load_pretrained(cfg.model)
    from safetensors.torch import load_file

    final = load_file(out["model_dir"] / "model.safetensors")
    assert not torch.allclose(final["model.norm.weight"], start.state_dict()["model.norm.weight"])
