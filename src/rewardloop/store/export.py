"""``rewardloop feedback export``: collected feedback → datasets in TRL's column formats, read directly by the
trainers (``rewardloop.data.load_rows``; ``task.name=dataset task.path=FILE``).

| format       | from                                   | columns                                                       |
|--------------|----------------------------------------|---------------------------------------------------------------|
| `pairs`      | pairwise feedback (ties, both-bad out) | prompt, chosen, rejected (+ chosen_id, rejected_id)           |
| `kto`        | thumbs                                 | prompt, completion, label (+ response_id)                     |
| `ratings`    | 1–5 ratings                            | prompt, completion, score (+ response_id, user_id)            |
| `sft`        | thumbs-up or rating ≥ 4, no negative   | prompt, completion (+ response_id)                            |
| `engagement` | engagement events                      | response_id, prompt, completion, event, value, propensity, user_id |

A chat interaction exports ``prompt`` as its message list and the completion as ``[{"role": "assistant", ...}]``
(TRL's conversational format); a completion interaction exports plain text.

``labelstudio`` and ``argilla`` export the store as annotation tasks, and ``action=import`` (``--in FILE``) reads
those tools' exports back into the store (rewardloop.store.interchange_read).
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from rewardloop.config import ConfigError, Section
from rewardloop.data import save_jsonl
from rewardloop.store.interchange import export_tasks
from rewardloop.store.interchange_read import import_tasks
from rewardloop.store.store import Store

Format = Literal["pairs", "kto", "ratings", "sft", "engagement", "labelstudio", "argilla"]
TASK_FORMATS = ("labelstudio", "argilla")
Row = dict[str, Any]


class StoreConfig(Section):
    """Where the feedback store lives."""

    url: str = Field(
        "sqlite:///rewardloop.db",
        description="SQLAlchemy URL: sqlite:///FILE (embedded, WAL) or postgresql+psycopg://USER:PW@HOST:PORT/DB",
    )


class FeedbackConfig(Section):
    """``rewardloop feedback export --store URL --format pairs --out pairs.jsonl`` (or ``store.url=... format=...
    out=...``): write the store's feedback as a TRL-format dataset (JSONL or Parquet, by the file's suffix), or as
    Label Studio / Argilla tasks; ``feedback import --format labelstudio --in export.json`` reads annotations back."""

    action: Literal["export", "import"] = Field("export", description="export | import (import: labelstudio, argilla)")
    store: StoreConfig = StoreConfig()
    format: Format = Field(
        "pairs",
        description="pairs | kto | ratings | sft | engagement | labelstudio | argilla (docs/guides/feedback.md)",
    )
    out: str | None = Field(None, description="export: output file (.jsonl / .parquet; tasks: .json, argilla .jsonl)")
    input: str | None = Field(None, description="import: the Label Studio / Argilla file to read (--in)")


def _prompt(it: Row) -> str | list:
    return it["messages"] if it["kind"] == "chat" else it["prompt"]


def _completion(it: Row) -> str | list:
    return [{"role": "assistant", "content": it["completion"]}] if it["kind"] == "chat" else it["completion"]


def pairs_rows(store: Store, skipped: Counter, ids: list[int] | None = None) -> Iterator[Row]:
    for fb, a, b in store.iter_feedback(("pairwise",), ids):
        if fb["value"] not in (0.0, 1.0):
            skipped["tie" if fb["value"] == 0.5 else "both_bad"] += 1
            continue
        if a["kind"] != b["kind"] or _prompt(a) != _prompt(b):
            skipped["different_prompts"] += 1  # a preference between answers to different prompts teaches nothing
            continue
        chosen, rejected = (a, b) if fb["value"] == 1.0 else (b, a)
        yield {
            "prompt": _prompt(a),
            "chosen": _completion(chosen),
            "rejected": _completion(rejected),
            "chosen_id": chosen["id"],
            "rejected_id": rejected["id"],
        }


def kto_rows(store: Store, skipped: Counter, ids: list[int] | None = None) -> Iterator[Row]:
    for fb, it, _ in store.iter_feedback(("thumbs",), ids):
        yield {"prompt": _prompt(it), "completion": _completion(it), "label": fb["value"] > 0, "response_id": it["id"]}


def ratings_rows(store: Store, skipped: Counter, ids: list[int] | None = None) -> Iterator[Row]:
    for fb, it, _ in store.iter_feedback(("rating",), ids):
        yield {
            "prompt": _prompt(it),
            "completion": _completion(it),
            "score": fb["value"],
            "response_id": it["id"],
            "user_id": fb["user_id"],
        }


def sft_rows(store: Store, skipped: Counter, ids: list[int] | None = None) -> Iterator[Row]:
    """Responses with a thumbs-up or a rating ≥ 4 and no thumbs-down or rating ≤ 2, once each, in id order."""
    good: dict[str, Row] = {}
    bad: set[str] = set()
    for fb, it, _ in store.iter_feedback(("thumbs", "rating"), ids):
        positive = fb["value"] > 0 if fb["kind"] == "thumbs" else fb["value"] >= 4
        negative = fb["value"] < 0 if fb["kind"] == "thumbs" else fb["value"] <= 2
        if positive:
            good.setdefault(it["id"], it)
        if negative:
            bad.add(it["id"])
    for rid, it in good.items():
        if rid in bad:
            skipped["mixed_feedback"] += 1
            continue
        yield {"prompt": _prompt(it), "completion": _completion(it), "response_id": rid}


def engagement_rows(store: Store, skipped: Counter, ids: list[int] | None = None) -> Iterator[Row]:
    for fb, it, _ in store.iter_feedback(("engagement",), ids):
        yield {
            "response_id": it["id"],
            "prompt": _prompt(it),
            "completion": _completion(it),
            "event": fb["event"],
            "value": fb["value"],
            "propensity": it["propensity"],
            "user_id": fb["user_id"] if fb["user_id"] is not None else it["user_id"],
        }


EXPORTERS: dict[str, Callable[..., Iterator[Row]]] = {  # (store, skipped, ids=None) → rows
    "pairs": pairs_rows,
    "kto": kto_rows,
    "ratings": ratings_rows,
    "sft": sft_rows,
    "engagement": engagement_rows,
}


def write_rows(rows: list[Row], out: str | os.PathLike) -> None:
    """JSONL or Parquet by suffix, written atomically (temporary file, then rename)."""
    path = Path(out)
    if path.suffix == ".jsonl":
        save_jsonl(rows, path)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise ValueError(
            f"{path}: these rows cannot share one Parquet schema ({e}); chat and completion interactions mixed? "
            "Write .jsonl instead"
        ) from None
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export(store: Store, format: Format, out: str | os.PathLike) -> dict[str, Any]:
    """Write ``format`` rows of ``store`` to ``out``; returns counts (rows written, skipped by reason). The task
    formats (labelstudio, argilla) write annotation tasks (rewardloop.store.interchange.export_tasks)."""
    if format in TASK_FORMATS:
        return export_tasks(store, format, out)
    if Path(out).suffix not in (".jsonl", ".parquet"):
        raise ValueError(f"out: {str(out)!r} must end in .jsonl or .parquet")
    skipped: Counter = Counter()
    rows = list(EXPORTERS[format](store, skipped))
    write_rows(rows, out)
    return {"out": str(out), "format": format, "rows": len(rows), "skipped": dict(skipped)}


def run(cfg: FeedbackConfig, resume: bool = False) -> dict[str, Any]:
    """The ``rewardloop feedback`` command."""
    if cfg.action == "import":
        if cfg.format not in TASK_FORMATS:
            raise ConfigError(f"format: import reads {' or '.join(TASK_FORMATS)} files, got {cfg.format!r}")
        if not cfg.input:
            raise ConfigError("input: required — the file to import (--in FILE.json or input=FILE.json)")
        if not Path(cfg.input).is_file():
            raise ConfigError(f"input: no such file {cfg.input!r}")
        with Store.open(cfg.store.url) as store:
            return import_tasks(store, cfg.format, cfg.input)
    if not cfg.out:
        raise ConfigError("out: required — the file to write (--out FILE.jsonl or out=FILE.parquet)")
    with Store.open(cfg.store.url) as store:
        return export(store, cfg.format, cfg.out)
