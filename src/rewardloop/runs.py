"""The run directory: ``runs/<name>/`` with the resolved config, ``metrics.jsonl``, samples, checkpoints and resume.

Layout::

    runs/<name>/config.yaml            the resolved config (what actually ran)
    runs/<name>/metrics.jsonl          one JSON object per logged step: {"step": N, "time": wall s, "cpu_s": ..., "<metric>": value}
    runs/<name>/samples.jsonl          sample tables (prompt, response, reward, components) per logged step
    runs/<name>/checkpoints/step-000100/{<model name>/, optim-<name>.pt, rng.pt, state.json}
    runs/<name>/checkpoints/latest     name of the newest complete checkpoint
    runs/<name>/final/<model name>/    the finished models (save_pretrained + tokenizer)
    runs/<name>/tb/, mlflow.db, ...    experiment trackers chosen by ``run.report_to`` (rewardloop.tracking)
    runs/<name>/trackers.json          each tracker's run id, so that ``--resume`` continues the same tracker runs

Checkpoints are written into a temporary directory and renamed into place, and ``latest`` is replaced atomically, so
a crash mid-write leaves the previous checkpoint intact; ``--resume`` continues from the newest checkpoint. A damaged
one (a truncated weights / optimizer / RNG file, an empty or missing state.json, ``latest`` naming a directory that is
gone) is skipped with a warning naming the bad file, and the next older one is loaded; when none is intact, resume
raises ``CheckpointError`` naming the run directory. Temporary directories and files left by a kill during a write
are removed when the run is reopened.

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
import logging
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

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint cannot be loaded (damaged or missing file), or no checkpoint of a run is intact; the message names
    the file or the run directory (the CLI turns it into exit status 2)."""


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
        self.cpu_started = time.process_time()  # this process's CPU seconds (all threads): learning per CPU-second
        self.report_to = list(report_to or [])
        self.command = command or self.path.name
        self.config = config
        self.resuming = resuming
        self.resumed_step: int | None = None  # set by resume(): the checkpoint's step (-1: none, started over)
        self._trackers: dict[str, Tracker] | None = None  # opened at the first log()
        self._tracker_ids: dict[str, str | None] = {}  # the trackers' run ids, continued when they are reopened
        self.max_cpu_s: float | None = None  # run.max_cpu_s: the CPU-second budget of this process's training

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
        remove_partial_writes(path)
        rd = cls(path, run.report_to, command, config, resuming=resume)
        rd.max_cpu_s = run.max_cpu_s
        if config is not None:
            _write_atomic(path / "config.yaml", dump_config(config))
        return rd

    # -- metrics and samples ---------------------------------------------------------------------------------
    def log(self, step: int, metrics: dict[str, Any]) -> dict[str, Any]:
        """Append one line to metrics.jsonl (flushed, so a crash loses nothing already logged) and send the row's
        numbers to the experiment trackers."""
        values = {k: _jsonable(v) for k, v in metrics.items()}
        row = {
            "step": step,
            "time": round(time.time() - self.started, 3),
            "cpu_s": round(time.process_time() - self.cpu_started, 3),
            **values,
        }
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
        """The newest checkpoint whose ``state.json`` reads (None when there is none); ``resume`` also checks the
        other files and falls back further when one of them is damaged."""
        for ckpt in self.checkpoint_candidates(warn=False):
            try:
                read_state(ckpt)
            except CheckpointError:
                continue
            return ckpt
        return None

    def checkpoint_candidates(self, warn: bool = True) -> list[Path]:
        """The checkpoint directories, newest first: ``checkpoints/step-*`` by step, and the one ``latest`` names.

        ``latest`` naming a directory that does not exist is reported (``warn``) and skipped."""
        found = {p.name: p for p in self.checkpoints.glob("step-*") if p.is_dir()}
        pointer = self.checkpoints / "latest"
        if pointer.exists():
            name = pointer.read_text(errors="replace").strip()
            if name and (self.checkpoints / name).is_dir():
                found.setdefault(name, self.checkpoints / name)
            elif warn:
                log.warning("%s names checkpoint %r, which does not exist; trying older checkpoints", pointer, name)
        return sorted(found.values(), key=lambda p: _step_of(p.name), reverse=True)

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
        """Restore weights, optimizer and RNG states from ``ckpt`` in place; returns its ``state.json``.

        Every file is read and checked first, and only then restored into the objects, so a damaged file
        (``CheckpointError`` naming it) leaves them untouched."""
        optimizers, generators = optimizers or {}, generators or {}
        state = read_state(ckpt)
        weights = {name: read_weights(model, ckpt / name) for name, model in models.items()}
        optim_states = {name: read_optimizer(opt, ckpt / f"optim-{name}.pt") for name, opt in optimizers.items()}
        rng = _torch_load(ckpt / "rng.pt")
        missing = [k for k in ("python", "numpy", "torch") if not isinstance(rng, dict) or k not in rng]
        missing += [f"generators.{k}" for k in generators if not missing and k not in rng.get("generators", {})]
        if missing:
            raise CheckpointError(f"{ckpt / 'rng.pt'}: damaged RNG state (missing {', '.join(missing)})")
        for name, model in models.items():
            apply_weights(model, weights[name], ckpt / name)
        for name, opt in optimizers.items():
            opt.load_state_dict(optim_states[name])
        restore_rng(rng, generators)
        return state

    def resume(
        self,
        models: dict[str, Any],
        optimizers: dict[str, torch.optim.Optimizer] | None = None,
        generators: dict[str, torch.Generator] | None = None,
    ) -> dict[str, Any] | None:
        """On ``--resume``: restore the newest intact checkpoint in place and return its state (``{"step": N, ...}``).

        Checkpoints are tried newest first; one that fails to load (a damaged or missing file) is skipped with a
        warning naming the file, and the next one overwrites everything the failed attempt may have restored. When
        checkpoints exist but none loads, ``CheckpointError`` names the run directory (never a silent restart).

        Rows logged after the restored step are dropped from metrics.jsonl and samples.jsonl (the resumed run logs
        them again), so each step is logged once. Returns None when the run was not opened with ``resume`` or has no
        checkpoint yet; in the latter case the interrupted run's rows are dropped too, as it starts over."""
        if not self.resuming:
            return None
        candidates = self.checkpoint_candidates()
        state, problems = None, []
        for ckpt in candidates:
            try:
                state = self.load_checkpoint(ckpt, models, optimizers, generators)
                break
            except Exception as e:  # any load failure: fall back to the next older checkpoint
                problem = str(e) if isinstance(e, CheckpointError) else f"{ckpt}: {type(e).__name__}: {e}"
                problems.append(problem)
                log.warning("checkpoint %s cannot be loaded, trying an older one: %s", ckpt.name, problem)
        pointer = self.checkpoints / "latest"
        if state is None and (candidates or pointer.exists()):
            detail = "\n  - ".join(problems or [f"{pointer} names a checkpoint that does not exist"])
            raise CheckpointError(
                f"run directory {self.path}: no intact checkpoint to resume from:\n  - {detail}\n"
                "start a new run (another run.name), or remove the checkpoints directory to start this one over"
            )
        if state is not None and problems:
            log.warning("resuming %s from %s (step %s)", self.path, ckpt.name, state["step"])
        if state is not None and (not pointer.exists() or pointer.read_text().strip() != ckpt.name):
            _write_atomic(pointer, ckpt.name)  # a kill between the checkpoint's rename and `latest`'s update
        self.resumed_step = state["step"] if state is not None else -1
        self.drop_logs_after(self.resumed_step)
        return state

    def last_step(self, step: int, total: int) -> bool:
        """Is ``step`` the run's last? ``total`` steps done, or ``run.max_cpu_s`` CPU-seconds of this process spent
        since the run opened (evaluation included; with Ray, the driver's own CPU only)."""
        if step >= total:
            return True
        spent = time.process_time() - self.cpu_started
        if self.max_cpu_s is not None and spent >= self.max_cpu_s:
            log.warning(
                "run.max_cpu_s=%g reached at step %d of %d (%.1f CPU-s): stopping", self.max_cpu_s, step, total, spent
            )
            return True
        return False

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


def _step_of(name: str) -> int:
    try:
        return int(name.removeprefix("step-"))
    except ValueError:
        return -1


def remove_partial_writes(run_dir: Path) -> None:
    """Remove what a kill during a write left behind: the temporary directories of ``atomic_dir`` (``.X.tmp-*``) and
    ``_write_atomic``'s temporary files, in the run directory, its checkpoints and final models. A ``.X.old-*`` copy
    from ``replace_dir`` is put back when ``X`` itself is gone (the kill fell between its two renames), else removed."""
    for folder in (run_dir, run_dir / "checkpoints", run_dir / "final"):
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            name = entry.name
            if not name.startswith(".") or (".tmp-" not in name and ".old-" not in name):
                continue
            original = folder / name[1:].rsplit(".tmp-" if ".tmp-" in name else ".old-", 1)[0]
            if ".old-" in name and entry.is_dir() and not original.exists():
                os.replace(entry, original)
                log.warning("restored %s from %s (a run was killed while replacing it)", original, name)
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            log.warning("removed %s, left by a run killed while writing %s", entry, original.name)


def read_state(ckpt: Path) -> dict[str, Any]:
    """``ckpt/state.json``: a mapping with an integer ``step`` (else ``CheckpointError`` naming the file)."""
    path = ckpt / "state.json"
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing") from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: damaged ({'empty' if not path.stat().st_size else e})") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise CheckpointError(f"{path}: damaged (no integer 'step')")
    return state


def _torch_load(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        return torch.load(path, weights_only=False)
    except Exception as e:  # truncated / corrupt pickles raise many kinds
        raise CheckpointError(f"{path}: damaged ({type(e).__name__}: {e})") from None


def read_optimizer(opt: torch.optim.Optimizer, path: Path) -> dict[str, Any]:
    """An optimizer's saved state dict, checked against ``opt``'s parameter groups before anything is restored."""
    sd = _torch_load(path)
    if (
        not isinstance(sd, dict)
        or not isinstance(sd.get("state"), dict)
        or not isinstance(sd.get("param_groups"), list)
    ):
        raise CheckpointError(f"{path}: damaged (not an optimizer state dict)")
    saved = [len(g.get("params", ())) for g in sd["param_groups"]]
    if saved != [len(g["params"]) for g in opt.param_groups]:
        raise CheckpointError(f"{path}: its parameter groups {saved} do not match the optimizer's")
    return sd


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


def read_weights(model, path: Path) -> dict[str, torch.Tensor]:
    """The safetensors weights saved by ``save_model`` in ``path`` (full model or LoRA adapter); ``CheckpointError``
    names a missing or damaged file. (Names are checked when ``apply_weights`` loads them: models such as the value
    model map their keys in ``load_state_dict``; a mismatch there is an error and ``resume`` reloads everything from
    the next checkpoint.)"""
    from safetensors.torch import load_file

    files = (
        [path / "adapter_model.safetensors"] if hasattr(model, "peft_config") else sorted(path.glob("*.safetensors"))
    )
    if not files or not files[0].is_file():
        raise CheckpointError(
            f"{files[0] if files else path / 'model.safetensors'}: missing (no *.safetensors weights)"
        )
    sd = {}
    for f in files:
        try:
            sd.update(load_file(f))
        except Exception as e:  # SafetensorError, OSError: a truncated or corrupt file
            raise CheckpointError(f"{f}: damaged ({type(e).__name__}: {e})") from None
    return sd


def apply_weights(model, sd: dict[str, torch.Tensor], path: Path) -> None:
    """Load weights read by ``read_weights`` into ``model`` in place."""
    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, sd)
        return
    missing, unexpected = model.load_state_dict(sd, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    tied |= {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()
    bad = [k for k in missing if k not in tied] + list(unexpected)
    if bad:
        raise CheckpointError(f"checkpoint {path} does not match the model: {bad[:5]}")


def restore_weights(model, path: Path) -> None:
    """Load the safetensors weights saved by ``save_model`` into ``model`` (full model or LoRA adapter)."""
    apply_weights(model, read_weights(model, path), path)
