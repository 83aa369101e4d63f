"""Experiment trackers: TensorBoard, MLflow, Weights & Biases and Trackio, one small class each.

``RunDir`` opens the ones named in ``run.report_to`` and forwards every row it writes to ``metrics.jsonl``. Each
library is imported only when chosen; ``pip install 'rewardloop[<name>]'`` installs it. Every tracker has the same
two methods: ``log(step, metrics)`` (numbers only: strings, lists and None are skipped) and ``close()``.

Where the data goes (docs/guides/tracking.md):

    tensorboard   <run>/tb/ event files                      tensorboard --logdir runs/
    mlflow        $MLFLOW_TRACKING_URI, else sqlite:///<run>/mlflow.db (experiment = command, run = run dir name)
    wandb         the W&B project = command ($WANDB_PROJECT wins), files under <run>/; WANDB_MODE=offline works
    trackio       the Trackio project = command, run = run dir name (Trackio's local store)
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import re
import time
from pathlib import Path
from typing import Any, Protocol

from rewardloop.config import ConfigError

# backend → the modules it imports (beyond the standard library) and the pip extra that installs them
REQUIRES: dict[str, tuple[str, ...]] = {
    "tensorboard": ("tensorboard",),
    "mlflow": ("mlflow",),
    "wandb": ("wandb",),
    "trackio": ("trackio",),
}
MLFLOW_LOCAL_STORE = ("sqlalchemy", "alembic")  # what MLflow's sqlite store needs besides mlflow-skinny


class Tracker(Protocol):
    run_id: str | None  # the backend's id of this run, kept in <run>/trackers.json so --resume continues it

    def log(self, step: int, metrics: dict[str, float]) -> None: ...
    def close(self) -> None: ...


def numeric(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of a metrics row (booleans, strings, lists and None dropped)."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 1e-3}}`` → ``{"optim.lr": 1e-3}`` (lists and scalars are leaves)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _missing_error(backend: str, module: str) -> ConfigError:
    return ConfigError(
        f"run.report_to: {backend!r} needs the {module!r} package; install it with pip install 'rewardloop[{backend}]'"
    )


def check_installed(backends: list[str]) -> None:
    """Raise ``ConfigError`` naming the pip extra when a chosen tracker's library is missing (imports nothing)."""
    for backend in backends:
        modules = REQUIRES[backend]
        if backend == "mlflow" and not os.environ.get("MLFLOW_TRACKING_URI"):
            modules += MLFLOW_LOCAL_STORE
        for module in modules:
            if importlib.util.find_spec(module) is None:
                raise _missing_error(backend, module)


def _require(backend: str) -> Any:
    """Import the backend's library, or raise the error naming its pip extra."""
    module = REQUIRES[backend][0]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise _missing_error(backend, module) from None


class TensorBoardTracker:
    """Scalars into event files under ``logdir``; ``purge_step`` (on resume) hides events logged after the checkpoint."""

    def __init__(self, logdir: Path, purge_step: int | None = None) -> None:
        _require("tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.run_id = None
        self.writer = SummaryWriter(str(logdir), purge_step=purge_step)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in numeric(metrics).items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()  # a crash loses nothing already logged, as with metrics.jsonl

    def close(self) -> None:
        self.writer.close()


class MLflowTracker:
    """One MLflow run (``run_name``) in experiment ``experiment`` with the flattened config as params."""

    _BAD_CHARS = re.compile(r"[^\w\-. /:]")  # MLflow rejects other characters in metric names

    def __init__(
        self,
        uri: str,
        experiment: str,
        run_name: str,
        params: dict[str, Any],
        run_id: str | None = None,
        artifact_location: str | None = None,
    ) -> None:
        mlflow = _require("mlflow")
        from mlflow.entities import Param

        self.client = mlflow.tracking.MlflowClient(uri)
        if run_id is not None:  # --resume: continue the same MLflow run
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
            return
        exp = self.client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(experiment, artifact_location)
        self.run_id = self.client.create_run(exp_id, run_name=run_name).info.run_id
        self.client.log_batch(self.run_id, params=[Param(k, str(v)[:500]) for k, v in flatten(params).items()])

    def log(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(self._BAD_CHARS.sub("_", k), v, now, step) for k, v in numeric(metrics).items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class WandbTracker:
    """A Weights & Biases run (``wandb.init``); set ``WANDB_MODE=offline`` to log without an account."""

    def __init__(
        self, project: str, name: str, directory: Path, config: dict[str, Any], run_id: str | None = None
    ) -> None:
        wandb = _require("wandb")
        resume = "allow" if run_id else None
        self.run = wandb.init(project=project, name=name, dir=str(directory), config=config, id=run_id, resume=resume)
        self.run_id = self.run.id

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(numeric(metrics), step=step)

    def close(self) -> None:
        self.run.finish()


class TrackioTracker:
    """A Trackio run (``trackio.init``), stored locally by Trackio (or in the Space it is configured for)."""

    def __init__(self, project: str, name: str, config: dict[str, Any], resume: bool = False) -> None:
        trackio = _require("trackio")
        self.run = trackio.init(project=project, name=name, config=config, resume="allow" if resume else "never")
        self.run_id = name

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(numeric(metrics), step=step)

    def close(self) -> None:
        self.run.finish()


def open_trackers(
    backends: list[str],
    run_dir: Path,
    command: str,
    config: dict[str, Any],
    resume_ids: dict[str, str | None] | None = None,
    purge_step: int | None = None,
) -> dict[str, Tracker]:
    """The trackers named in ``backends`` for the run in ``run_dir``.

    ``resume_ids`` (the ``run_id`` of each tracker of the interrupted run) and ``purge_step`` (the first step the
    resumed run logs again) are set on ``--resume``, so the trackers continue the same runs.
    """
    ids = resume_ids or {}
    trackers: dict[str, Tracker] = {}
    for backend in dict.fromkeys(backends):
        if backend == "tensorboard":
            trackers[backend] = TensorBoardTracker(run_dir / "tb", purge_step=purge_step)
        elif backend == "mlflow":
            uri = os.environ.get("MLFLOW_TRACKING_URI")
            local = (run_dir / "mlartifacts").resolve().as_uri() if not uri else None
            uri = uri or f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"
            trackers[backend] = MLflowTracker(uri, command, run_dir.name, config, ids.get(backend), local)
        elif backend == "wandb":
            project = os.environ.get("WANDB_PROJECT") or command
            trackers[backend] = WandbTracker(project, run_dir.name, run_dir, config, ids.get(backend))
        elif backend == "trackio":
            trackers[backend] = TrackioTracker(command, run_dir.name, config, resume=backend in ids)
        else:
            raise ConfigError(f"run.report_to: unknown tracker {backend!r}; choose from {', '.join(REQUIRES)}")
    return trackers
