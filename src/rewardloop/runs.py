"""The run directory: ``runs/<name>/`` with the resolved config, ``metrics.jsonl``, samples, checkpoints and resume.

Layout::

    runs/<name>/config.yaml            the resolved config (what actually ran)
    runs/<name>/metrics.jsonl          one JSON object per logged step: {"step": N, "time": ..., "<metric>": value}
    runs/<name>/samples.jsonl          sample tables (prompt, response, reward, components) per logged step
    runs/<name>/checkpoints/step-000100/{<model name>/, optim-<name>.pt, rng.pt, state.json}
    runs/<name>/checkpoints/latest     name of the newest complete checkpoint
    runs/<name>/final/<model name>/    the finished models (save_pretrained + tokenizer)
    runs/<name>/tb/, mlflow.db, ...    experiment trackers chosen by ``run.report_to`` (rewardloop.tracking)
    runs/<name>/trackers.json          each tracker's run id, so that ``--resume`` continues the same tracker runs

Checkpoints are written into a temporary directory and renamed into place, and ``latest`` is replaced atomically, so
a crash mid-write leaves the previous checkpoint intact; ``--resume`` continues from ``latest``.

Every trainer uses the same loop plumbing::

    run = RunDir.open(cfg.run, "sft", cfg, resume=resume)
    state = run.resume({"policy": model}, {"policy": opt}) or {"step": 0}   # None: nothing to resume
    ...
    if run.due(step, cfg.steps, cfg.run.save_every):
        run.save_checkpoint(step, {"policy": (model, tokenizer)}, {"policy": opt}, {"scheduler": ...})
    run.close()                                                              # flushes the experiment trackers
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel

from rewardloop.config import RunConfig, dump_config
from rewardloop.models.loading import atomic_dir, replace_dir, save_model
from rewardloop.tracking import Tracker, check_installed, open_trackers


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else (1e308 if value > 0 else -1e308)
    if isinstance(value, np.generic):
        return value.item()
    return value


class RunDir:
    """A run's directory on disk. Create with ``RunDir.open(cfg.run, "sft", cfg, resume=...)``."""

    def __init__(
        self,
        path: str | Path,
        report_to: list[str] | None = None,
        command: str | None = None,
        config: BaseModel | None = None,
        resuming: bool = False,
    ) -> None:
        self.path = Path(path)
        self.started = time.time()
        self.report_to = list(report_to or [])
        self.command = command or self.path.name
        self.config = config
        self.resuming = resuming
        self.resumed_step: int | None = None  # set by resume(): the checkpoint's step (-1: none, started over)
        self._trackers: dict[str, Tracker] | None = None  # opened at the first log()
        self._tracker_ids: dict[str, str | None] = {}  # the trackers' run ids, continued when they are reopened

    @classmethod
    def open(cls, run: RunConfig, command: str, config: BaseModel | None = None, resume: bool = False) -> RunDir:
        """Create (or, with ``resume``, reopen) the run directory and write the resolved config.

        Everything that can be refused (an existing run, a tracker library that is not installed) is checked before
        anything is created, so a bad configuration leaves nothing under ``run.root``."""
        name = run.name or f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"
        path = Path(run.root) / name
        if path.exists() and not resume and (path / "checkpoints" / "latest").exists():
            raise FileExistsError(
                f"run directory {path} already holds a run; pass --resume to continue it, or a new run.name"
            )
        check_installed(run.report_to)
        path.mkdir(parents=True, exist_ok=True)
        rd = cls(path, run.report_to, command, config, resuming=resume)
        if config is not None:
            _write_atomic(path / "config.yaml", dump_config(config))
        return rd

    # -- metrics and samples ---------------------------------------------------------------------------------
    def log(self, step: int, metrics: dict[str, Any]) -> dict[str, Any]:
        """Append one line to metrics.jsonl (flushed, so a crash loses nothing already logged) and send the row's
        numbers to the experiment trackers."""
        values = {k: _jsonable(v) for k, v in metrics.items()}
        row = {"step": step, "time": round(time.time() - self.started, 3), **values}
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        for tracker in self.trackers().values():
            tracker.log(step, values)
        return row

    def trackers(self) -> dict[str, Tracker]:
        """The experiment trackers of ``report_to``, opened on first use (after ``resume``, which they continue)."""
        if self._trackers is None:
            ids_file = self.path / "trackers.json"
            if self.resuming and not self._tracker_ids and ids_file.exists():
                self._tracker_ids = json.loads(ids_file.read_text())
            purge = self.resumed_step + 1 if self.resumed_step is not None else None
            config = self.config.model_dump(mode="json") if self.config is not None else {}
            self._trackers = open_trackers(self.report_to, self.path, self.command, config, self._tracker_ids, purge)
            if self._trackers:
                self._tracker_ids = {k: t.run_id for k, t in self._trackers.items()}
                _write_atomic(ids_file, json.dumps(self._tracker_ids))
        return self._trackers

    def close(self) -> None:
        """Flush and close the experiment trackers (call once training has finished; logging again reopens them)."""
        for tracker in (self._trackers or {}).values():
            tracker.close()
        self._trackers, self.resumed_step = None, None

    def log_samples(self, step: int, samples: list[dict[str, Any]]) -> None:
        """Append sample rows (prompt, response, reward, components, ...) tagged with ``step`` to samples.jsonl."""
        with open(self.path / "samples.jsonl", "a") as f:
            for s in samples:
                f.write(json.dumps({"step": step, **{k: _jsonable(v) for k, v in s.items()}}) + "\n")

    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.path)

    def drop_logs_after(self, step: int) -> None:
        """On resume from checkpoint ``step``: drop metrics/sample rows logged after it (the resumed run re-logs them)."""
        for name in ("metrics.jsonl", "samples.jsonl"):
            path = self.path / name
            if path.exists():
                kept = [json.dumps(r) + "\n" for r in read_metrics(self.path, name) if r.get("step", 0) <= step]
                _write_atomic(path, "".join(kept))

    # -- checkpoints -----------------------------------------------------------------------------------------
    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def latest_checkpoint(self) -> Path | None:
        pointer = self.checkpoints / "latest"
        if not pointer.exists():
            return None
        ckpt = self.checkpoints / pointer.read_text().strip()
        return ckpt if (ckpt / "state.json").exists() else None

    def save_checkpoint(
        self,
        step: int,
        models: dict[str, tuple[Any, Any]],
        optimizers: dict[str, torch.optim.Optimizer] | None = None,
        state: dict[str, Any] | None = None,
        generators: dict[str, torch.Generator] | None = None,
        keep: int = 2,
    ) -> Path:
        """Write ``checkpoints/step-N`` atomically: models (save_pretrained), optimizers, RNG states, ``state``."""
        target = self.checkpoints / f"step-{step:07d}"
        tmp = atomic_dir(target)
        try:
            for name, (model, tokenizer) in models.items():
                save_model(model, tokenizer, tmp / name, lora_save="adapter")
            for name, opt in (optimizers or {}).items():
                torch.save(opt.state_dict(), tmp / f"optim-{name}.pt")
            torch.save(capture_rng(generators or {}), tmp / "rng.pt")
            (tmp / "state.json").write_text(json.dumps({"step": step, **(state or {})}))
            replace_dir(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _write_atomic(self.checkpoints / "latest", target.name)
        for old in sorted(self.checkpoints.glob("step-*"))[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
        return target

    def load_checkpoint(
        self,
        ckpt: Path,
        models: dict[str, Any],
        optimizers: dict[str, torch.optim.Optimizer] | None = None,
        generators: dict[str, torch.Generator] | None = None,
    ) -> dict[str, Any]:
        """Restore weights, optimizer and RNG states from ``ckpt`` in place; returns its ``state.json``."""
        for name, model in models.items():
            restore_weights(model, ckpt / name)
        for name, opt in (optimizers or {}).items():
            opt.load_state_dict(torch.load(ckpt / f"optim-{name}.pt", weights_only=False))
        restore_rng(torch.load(ckpt / "rng.pt", weights_only=False), generators or {})
        return json.loads((ckpt / "state.json").read_text())

    def resume(
        self,
        models: dict[str, Any],
        optimizers: dict[str, torch.optim.Optimizer] | None = None,
        generators: dict[str, torch.Generator] | None = None,
    ) -> dict[str, Any] | None:
        """On ``--resume``: restore the latest checkpoint in place and return its state (``{"step": N, ...}``).

        Rows logged after that step are dropped from metrics.jsonl and samples.jsonl (the resumed run logs them
        again), so each step is logged once. Returns None when the run was not opened with ``resume`` or has no
        checkpoint yet; in the latter case the interrupted run's rows are dropped too, as it starts over."""
        if not self.resuming:
            return None
        ckpt = self.latest_checkpoint()
        state = self.load_checkpoint(ckpt, models, optimizers, generators) if ckpt is not None else None
        self.resumed_step = state["step"] if state is not None else -1
        self.drop_logs_after(self.resumed_step)
        return state

    @staticmethod
    def due(step: int, total: int, save_every: int) -> bool:
        """Is a checkpoint due after ``step`` of ``total``? Every ``save_every`` steps (0 = never) and at the end."""
        return step == total or (save_every > 0 and step % save_every == 0)

    def save_final(self, name: str, model, tokenizer, lora_save: str = "merged") -> Path:
        return save_model(model, tokenizer, self.path / "final" / name, lora_save=lora_save)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_metrics(run_dir: str | Path, name: str = "metrics.jsonl") -> list[dict[str, Any]]:
    """Rows of ``metrics.jsonl`` (or another JSONL log ``name``); a torn last line from a crash is ignored."""
    path = Path(run_dir) / name
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def capture_rng(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "generators": {k: g.get_state() for k, g in generators.items()},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for k, g in generators.items():
        g.set_state(state["generators"][k])


def restore_weights(model, path: Path) -> None:
    """Load the safetensors weights saved by ``save_model`` into ``model`` (full model or LoRA adapter)."""
    from safetensors.torch import load_file

    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(path / "adapter_model.safetensors"))
        return
    sd = {}
    for f in sorted(path.glob("*.safetensors")):
        sd.update(load_file(f))
    if not sd:
        raise FileNotFoundError(f"no *.safetensors weights in {path}")
    missing, unexpected = model.load_state_dict(sd, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    tied |= {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()
    bad = [k for k in missing if k not in tied] + list(unexpected)
    if bad:
        raise ValueError(f"checkpoint {path} does not match the model: {bad[:5]}")
