"""Experiment trackers: RunDir forwards every logged row to TensorBoard / MLflow (read back with their own readers),
to W&B / Trackio (fake modules with their public API), and continues the same tracker runs on --resume."""

from __future__ import annotations

import json
import sys
import types

import pytest

from rewardloop.config import ConfigError, RunConfig
from rewardloop.runs import RunDir, read_metrics
from rewardloop.tracking import flatten, numeric

ROWS = [
    {"train/loss": 2.0, "eval/accuracy": 0.1, "note": "text", "hist": [1, 2], "missing": None, "done": True},
    {"train/loss": 1.5, "eval/accuracy": 0.4, "note": "text"},
    {"train/loss": 1.25, "eval/accuracy": 0.5, "lr": 3e-4},
]


def scalars(logdir, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return [(e.step, pytest.approx(e.value)) for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []


def mlflow_history(run: RunDir, key: str) -> list[tuple[int, float]]:
    from mlflow.tracking import MlflowClient

    run_id = json.loads((run.path / "trackers.json").read_text())["mlflow"]
    client = MlflowClient(f"sqlite:///{run.path / 'mlflow.db'}")
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.fixture
def local_mlflow(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_numeric_keeps_numbers_only_and_flatten_dots_keys():
    assert numeric(ROWS[0]) == {"train/loss": 2.0, "eval/accuracy": 0.1}
    assert numeric({"nan": float("nan"), "n": 3}) == {"n": 3.0}
    assert flatten({"optim": {"lr": 1e-3, "betas": [0.9, 0.95]}, "steps": 5}) == {
        "optim.lr": 1e-3,
        "optim.betas": [0.9, 0.95],
        "steps": 5,
    }


def test_rundir_logs_to_tensorboard_and_mlflow(tmp_path, local_mlflow):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    cfg = RunConfig(root=str(tmp_path), name="tracked", report_to=["tensorboard", "mlflow"])
    run = RunDir.open(cfg, "sft", RunConfig(seed=7))
    for step, row in enumerate(ROWS, start=1):
        run.log(step, row)
    run.close()

    assert scalars(run.path / "tb", "train/loss") == [(1, 2.0), (2, 1.5), (3, 1.25)]
    assert scalars(run.path / "tb", "eval/accuracy") == [(1, 0.1), (2, 0.4), (3, 0.5)]
    assert scalars(run.path / "tb", "note") == [] and scalars(run.path / "tb", "done") == []
    assert mlflow_history(run, "train/loss") == [(1, 2.0), (2, 1.5), (3, 1.25)]
    assert mlflow_history(run, "lr") == [(3, 3e-4)]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{run.path / 'mlflow.db'}")
    info = client.get_run(json.loads((run.path / "trackers.json").read_text())["mlflow"])
    assert info.info.run_name == "tracked" and info.info.status == "FINISHED"
    assert client.get_experiment(info.info.experiment_id).name == "sft"
    assert info.data.params["seed"] == "7" and info.data.params["report_to"] == "[]"  # the flattened config
    assert not (tmp_path / "mlruns").exists()  # nothing written outside the run directory


def test_resume_continues_the_same_tracker_runs_and_hides_rolled_back_steps(tmp_path, local_mlflow):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    cfg = RunConfig(root=str(tmp_path), name="crashed", report_to=["tensorboard", "mlflow"])
    run = RunDir.open(cfg, "sft")
    run.log(1, {"loss": 1.0})
    run.save_checkpoint(1, {})
    run.log(2, {"loss": 2.0})  # then the process dies: no close()
    first_id = json.loads((run.path / "trackers.json").read_text())["mlflow"]

    again = RunDir.open(cfg, "sft", resume=True)
    assert again.resume({})["step"] == 1
    again.log(2, {"loss": 0.5})
    again.log(3, {"loss": 0.25})
    again.close()

    assert scalars(run.path / "tb", "loss") == [(1, 1.0), (2, 0.5), (3, 0.25)]  # step 2 of the crash purged
    assert json.loads((run.path / "trackers.json").read_text())["mlflow"] == first_id
    assert (3, 0.25) in mlflow_history(again, "loss")


def test_missing_tracker_library_is_a_config_error_before_anything_is_created(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    cfg = RunConfig(root=str(tmp_path / "runs"), name="x", report_to=["wandb"])
    with pytest.raises(ConfigError, match=r"pip install 'rewardloop\[wandb\]'"):
        RunDir.open(cfg, "sft")
    assert not (tmp_path / "runs").exists()


def test_report_to_accepts_trl_spellings():
    assert RunConfig(report_to="tensorboard").report_to == ["tensorboard"]
    assert RunConfig(report_to="tensorboard,mlflow").report_to == ["tensorboard", "mlflow"]
    assert RunConfig(report_to="none").report_to == []
    with pytest.raises(ValueError, match="report_to"):
        RunConfig(report_to=["comet"])


class FakeRun:
    """What wandb.init / trackio.init return: .log(metrics, step=), .finish(), .id."""

    def __init__(self, calls: list, **kwargs) -> None:
        self.calls, self.id = calls, kwargs.get("id") or "run-1"
        calls.append(("init", kwargs))

    def log(self, metrics, step=None):
        self.calls.append(("log", step, dict(metrics)))

    def finish(self):
        self.calls.append(("finish",))


@pytest.mark.parametrize("backend", ["wandb", "trackio"])
def test_wandb_and_trackio_receive_init_log_finish(tmp_path, monkeypatch, backend):
    calls: list = []
    fake = types.ModuleType(backend)
    fake.init = lambda **kwargs: FakeRun(calls, **kwargs)
    fake.__spec__ = types.SimpleNamespace(name=backend)  # so importlib.util.find_spec finds it
    monkeypatch.setitem(sys.modules, backend, fake)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)

    cfg = RunConfig(root=str(tmp_path), name="r1", report_to=[backend])
    run = RunDir.open(cfg, "grpo", RunConfig(seed=3))
    run.log(1, ROWS[0])
    run.log(2, ROWS[1])
    run.close()

    (_, init), *logs, end = calls
    assert init["project"] == "grpo" and init["name"] == "r1" and init["config"]["seed"] == 3
    if backend == "wandb":
        assert init["dir"] == str(run.path)
    assert logs == [
        ("log", 1, {"train/loss": 2.0, "eval/accuracy": 0.1}),
        ("log", 2, {"train/loss": 1.5, "eval/accuracy": 0.4}),
    ]
    assert end == ("finish",)

    calls.clear()  # --resume continues the same run
    again = RunDir.open(cfg, "grpo", resume=True)
    again.resume({})
    again.log(3, {"x": 1})
    assert calls[0][1]["resume"] == "allow"
    if backend == "wandb":
        assert calls[0][1]["id"] == "run-1"


def test_sft_with_tensorboard_writes_its_loss(tmp_path):
    pytest.importorskip("tensorboard")
    from rewardloop.algorithms.sft import SFTConfig, train
    from rewardloop.config import GenerationConfig, ModelConfig, OptimConfig
    from rewardloop.envs.tasks import TaskConfig

    cfg = SFTConfig(
        model=ModelConfig(preset="llama-1m", max_length=16, device="cpu"),
        task=TaskConfig(digits=(1, 1), n_train=32, n_test=4),
        optim=OptimConfig(lr=3e-3),
        gen=GenerationConfig(max_new_tokens=3, temperature=0.0),
        run=RunConfig(root=str(tmp_path), name="sft-tb", progress=False, report_to=["tensorboard"]),
        steps=4,
        batch_size=8,
        eval_every=4,
        eval_size=4,
    )
    result = train(cfg)
    logged = [(r["step"], r["train/loss"]) for r in read_metrics(result["run_dir"]) if "train/loss" in r]
    assert scalars(result["run_dir"] / "tb", "train/loss") == logged and len(logged) == 4
    assert [s for s, _ in scalars(result["run_dir"] / "tb", "eval/loss")] == [0, 4]
