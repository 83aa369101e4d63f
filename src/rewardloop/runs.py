"""The run directory: ``runs/<name>/`` with the resolved config, ``metrics.jsonl``, samples, checkpoints and resume.

Layout::

    runs/<name>/config.yaml            the resolved config (what actually ran)
    runs/<name>/metrics.jsonl          one JSON object per logged step: {"step": N, "time": ..., "<metric>": value}
    runs/<name>/samples.jsonl          sample tables (prompt, response, reward, components) per logged step
    runs/<name>/checkpoints/step-000100/{<model name>/, optim-<name>.pt, rng.pt, state.json}
    runs/<name>/checkpoints/latest     name of the newest complete checkpoint
    runs/<name>/final/<model name>/    the finished models (save_pretrained + tokenizer)

Checkpoints are written into a temporary directory and renamed into place, and ``latest`` is replaced atomically, so
a crash mid-write leaves the previous checkpoint intact; ``--resume`` continues from ``latest``.
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
from rewardloop.models.loading import _atomic_dir, replace_dir, save_model


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

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.started = time.time()

    @classmethod
    def open(cls, run: RunConfig, command: str, config: BaseModel | None = None, resume: bool = False) -> RunDir:
        """Create (or, with ``resume``, reopen) the run directory and write the resolved config."""
        name = run.name or f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"
        path = Path(run.root) / name
        if path.exists() and not resume and (path / "checkpoints" / "latest").exists():
            raise FileExistsError(
                f"run directory {path} already holds a run; pass --resume to continue it, or a new run.name"
            )
        path.mkdir(parents=True, exist_ok=True)
        rd = cls(path)
        if config is not None:
            _write_atomic(path / "config.yaml", dump_config(config))
        return rd

    # -- metrics and samples ---------------------------------------------------------------------------------
    def log(self, step: int, metrics: dict[str, Any]) -> dict[str, Any]:
        """Append one line to metrics.jsonl (flushed, so a crash loses nothing already logged)."""
        row = {"step": step, "time": round(time.time() - self.started, 3)}
        row.update({k: _jsonable(v) for k, v in metrics.items()})
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        return row

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
        tmp = _atomic_dir(target)
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
