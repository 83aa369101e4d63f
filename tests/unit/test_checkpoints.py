"""Damaged checkpoints: ``RunDir.resume`` falls back to the newest intact checkpoint with a warning naming the bad
file, raises ``CheckpointError`` naming the run directory when none is intact, and a reopened run loses the temporary
directories a kill during a write left behind."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch

from rewardloop import cli
from rewardloop.config import RunConfig
from rewardloop.runs import CheckpointError, RunDir


def train_step(model, opt) -> None:
    model.train()
    ids = torch.arange(8).unsqueeze(0)
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    opt.zero_grad()


@pytest.fixture
def saved(tmp_path, tiny_model, tokenizer):
    """A run with checkpoints at steps 1 and 2 (different weights and optimizer moments); returns a function that
    builds a fresh (model, optimizer) and the weights saved at step 1."""
    model = tiny_model("llama-1m")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    run = RunDir(tmp_path / "run")
    step1 = {}
    for step in (1, 2):
        train_step(model, opt)
        run.save_checkpoint(step, {"policy": (model, tokenizer)}, {"policy": opt}, {"scheduler": {"n": step}})
        if step == 1:
            step1 = {k: v.clone() for k, v in model.state_dict().items()}

    def fresh():
        m = tiny_model("llama-1m", seed=5)
        return m, torch.optim.AdamW(m.parameters(), lr=1e-2)

    return run.path, fresh, step1


def resume(path, fresh):
    model, opt = fresh()
    run = RunDir(path, resuming=True)
    return run.resume({"policy": model}, {"policy": opt}), model, opt


def truncate(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


DAMAGE = {
    "weights": ("policy/model.safetensors", truncate),
    "weights-missing": ("policy/model.safetensors", lambda p: p.unlink()),
    "optimizer": ("optim-policy.pt", truncate),
    "optimizer-garbage": ("optim-policy.pt", lambda p: p.write_bytes(b"\x00\xff garbage" * 10)),
    "rng": ("rng.pt", truncate),
    "state-empty": ("state.json", lambda p: p.write_text("")),
    "state-missing": ("state.json", lambda p: p.unlink()),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(saved, caplog, kind):
    path, fresh, step1 = saved
    name, damage = DAMAGE[kind]
    bad = path / "checkpoints" / "step-0000002" / name
    damage(bad)
    with caplog.at_level(logging.WARNING, logger="rewardloop.runs"):
        state, model, opt = resume(path, fresh)
    assert state == {"step": 1, "scheduler": {"n": 1}}
    assert all(torch.equal(v, step1[k]) for k, v in model.state_dict().items())
    assert all(float(s["step"]) == 1 for s in opt.state_dict()["state"].values())  # step 1's optimizer, not step 2's
    assert str(bad) in caplog.text


def test_latest_pointing_to_a_missing_directory_falls_back(saved, caplog):
    path, fresh, step1 = saved
    shutil.rmtree(path / "checkpoints" / "step-0000002")
    (path / "checkpoints" / "latest").write_text("step-0000009")
    with caplog.at_level(logging.WARNING, logger="rewardloop.runs"):
        state, model, _ = resume(path, fresh)
    assert state["step"] == 1
    assert all(torch.equal(v, step1[k]) for k, v in model.state_dict().items())
    assert "step-0000009" in caplog.text and "latest" in caplog.text


def test_intact_latest_is_used_and_nothing_is_warned(saved, caplog):
    path, fresh, _ = saved
    with caplog.at_level(logging.WARNING, logger="rewardloop.runs"):
        state, _, _ = resume(path, fresh)
    assert state["step"] == 2 and caplog.text == ""


def test_no_intact_checkpoint_is_a_clear_error_not_a_restart(saved):
    path, fresh, _ = saved
    for ckpt in ("step-0000001", "step-0000002"):
        truncate(path / "checkpoints" / ckpt / "optim-policy.pt")
    with pytest.raises(CheckpointError) as info:
        resume(path, fresh)
    msg = str(info.value)
    assert str(path) in msg and "no intact checkpoint" in msg
    assert "step-0000001/optim-policy.pt" in msg and "step-0000002/optim-policy.pt" in msg
    assert isinstance(info.value, ValueError)  # the CLI's exit 2


def test_latest_naming_nothing_and_no_checkpoint_left_is_an_error(saved):
    path, fresh, _ = saved
    for ckpt in ("step-0000001", "step-0000002"):
        shutil.rmtree(path / "checkpoints" / ckpt)
    with pytest.raises(CheckpointError, match="no intact checkpoint"):
        resume(path, fresh)


def test_a_failed_load_restores_nothing(saved):
    """Every file is read before anything is restored: a damaged optimizer file leaves the weights untouched."""
    path, fresh, _ = saved
    truncate(path / "checkpoints" / "step-0000002" / "optim-policy.pt")
    model, opt = fresh()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"optim-policy\.pt"):
        RunDir(path).load_checkpoint(path / "checkpoints" / "step-0000002", {"policy": model}, {"policy": opt})
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_reopening_a_run_removes_partial_checkpoint_writes(saved, caplog):
    path, _, _ = saved
    ckpts = path / "checkpoints"
    partial = ckpts / ".step-0000003.tmp-abc123"
    (partial / "policy").mkdir(parents=True)
    (partial / "optim-policy.pt").write_bytes(b"half")
    (ckpts / ".latest.tmp-999").write_text("step-0000003")
    (path / "final" / ".policy.tmp-xyz").mkdir(parents=True)
    # a kill between replace_dir's two renames: step-2 moved aside, the new one not yet in place
    (ckpts / "step-0000002").rename(ckpts / ".step-0000002.old-4242")
    with caplog.at_level(logging.WARNING, logger="rewardloop.runs"):
        RunDir.open(RunConfig(root=str(path.parent), name=path.name), "sft", resume=True)
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest", "step-0000001", "step-0000002"]
    assert list((path / "final").iterdir()) == []
    assert ".step-0000003.tmp-abc123" in caplog.text


def test_cli_resume_without_intact_checkpoint_exits_2(tmp_path, capsys):
    run = tmp_path / "r"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "latest").write_text("step-0000005")
    argv = ["sft", "--resume", f"run.root={tmp_path}", "run.name=r", "steps=2", "run.progress=false"]
    argv += ["model.device=cpu", "model.max_length=16"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert str(run) in err and "no intact checkpoint" in err
