"""Reading a dataset source (JSONL, JSON, Parquet, CSV, ``datasets`` objects and dirs, ``hf:NAME``) into rows
numbered as the user sees them, before any validation."""

from __future__ import annotations

import contextlib
import csv
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewardloop.data.errors import DataError, show_value

# ---------------------------------------------------------------------------------------------------------------
# Reading sources into (row number, raw row) pairs
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Table:
    """A source read as (row number, raw row) pairs, before any validation."""

    name: str  # shown in errors: the path as given, "hf:...", "<list>", "<datasets.Dataset>"
    unit: str  # "line" (JSONL, CSV: physical line in the file) or "row" (1-based position)
    rows: list[tuple[int, Any]] = field(default_factory=list)
    columns: list[str] | None = None  # known schema (Parquet, CSV, datasets): checked once, up front
    typed: bool = True  # False for CSV: every cell is text (see loading.csv_cells)

    def where(self, number: int) -> str:
        return f"{self.name} {self.unit} {number}"


@dataclass(frozen=True)
class Unparsed:
    """A line that could not be decoded; kept in row order so its error is reported in place."""

    message: str


def read_jsonl_table(path: Path, name: str, limit: int | None) -> Table:
    """JSON Lines, one raw row per non-blank line; undecodable lines become ``Unparsed`` in place."""
    table = Table(name, "line")
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if limit is not None and len(table.rows) >= limit:
                break
            try:
                text = raw.decode("utf-8-sig")  # -sig: tolerate a byte-order mark on line 1
            except UnicodeDecodeError as e:
                table.rows.append((lineno, Unparsed(f"not valid UTF-8 ({e.reason} at byte {e.start})")))
                continue
            if not (text := text.strip()):
                continue
            try:
                table.rows.append((lineno, json.loads(text)))
            except json.JSONDecodeError as e:
                table.rows.append((lineno, Unparsed(f"invalid JSON ({e.msg} at column {e.colno}): {show_value(text)}")))
            except (ValueError, RecursionError) as e:  # nested too deep, an int beyond the str→int digit limit
                table.rows.append((lineno, Unparsed(f"invalid JSON ({_short(e)}): {show_value(text)}")))
    return table


def _short(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).split(';')[0]}"


def _read_json_table(path: Path, name: str, limit: int | None) -> Table:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{name}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # one object per line in a .json file: read it as JSON Lines, as `datasets` does
            return read_jsonl_table(path, name, limit)
        raise DataError(f"{name} line {e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
    except (ValueError, RecursionError) as e:  # nested too deep, an int beyond the str→int digit limit
        raise DataError(f"{name}: invalid JSON ({_short(e)})") from None
    if not isinstance(data, list):
        keys = f" with keys {list(data)[:10]}" if isinstance(data, dict) else ""
        raise DataError(f"{name}: expected a JSON list of objects (one per row), got {type(data).__name__}{keys}")
    return Table(name, "row", list(enumerate(data[:limit] if limit is not None else data, 1)))


def _read_parquet_table(path: Path, name: str, limit: int | None) -> Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        table = Table(name, "row", columns=list(pf.schema_arrow.names))
        for batch in pf.iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                if limit is not None and len(table.rows) >= limit:
                    return table
                table.rows.append((len(table.rows) + 1, row))
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{name}: not a readable Parquet file ({e})") from None
    return table


def _read_csv_table(path: Path, name: str, limit: int | None) -> Table:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        try:
            table = Table(name, "line", columns=list(reader.fieldnames or []), typed=False)
            for row in reader:
                if limit is not None and len(table.rows) >= limit:
                    break
                if None in row:  # DictReader puts fields beyond the header under the key None
                    row["<extra fields>"] = row.pop(None)
                _csv_margin(row)
                table.rows.append((reader.line_num, row))
        except UnicodeDecodeError as e:
            raise DataError(f"{name}: not valid UTF-8 ({e.reason})") from None
        except csv.Error as e:  # e.g. a cell over csv.field_size_limit()
            raise DataError(f"{name} line {reader.reader.line_num}: unreadable CSV ({e})") from None
    return table


def _csv_margin(row: dict[str, Any]) -> None:
    """CSV has no types or nulls: an empty margin cell is a missing margin, a numeric one becomes a float."""
    if row.get("margin") == "":
        del row["margin"]
    elif isinstance(row.get("margin"), str):
        with contextlib.suppress(ValueError):  # a non-numeric cell stays a string and is reported by validation
            row["margin"] = float(row["margin"])


def _require_datasets(what: str) -> Any:
    try:
        import datasets
    except ImportError as e:
        raise ImportError(
            f"{what} needs the optional 'datasets' package: pip install 'rewardloop[datasets]' (or pip install datasets)"
        ) from e
    return datasets


def _pick_split(dataset_dict: Mapping[str, Any], split: str | None, name: str) -> tuple[str, Any]:
    """(split name, dataset) for ``split`` if given, else "train", else the only split."""
    splits = list(dataset_dict)
    if split is None:
        if "train" in dataset_dict:
            split = "train"
        elif len(splits) == 1:
            split = splits[0]
        else:
            raise DataError(f"{name}: several splits {splits} and no 'train'; pass split=...")
    if split not in dataset_dict:
        raise DataError(f"{name}: no split {split!r}; available splits: {splits}")
    return split, dataset_dict[split]


def _dataset_table(dataset: Any, name: str, limit: int | None) -> Table:
    """Rows of a ``datasets.Dataset`` / ``IterableDataset`` (iteration yields one dict per row)."""
    table = Table(name, "row", columns=getattr(dataset, "column_names", None))
    for number, row in enumerate(dataset, 1):
        if limit is not None and number > limit:
            break
        table.rows.append((number, row))
    return table


def _hf_hub_table(spec: str, split: str | None, limit: int | None) -> Table:
    """``hf:NAME``, ``hf:NAME:SPLIT`` or ``hf:NAME:CONFIG:SPLIT`` through ``datasets.load_dataset``."""
    parts = spec[len("hf:") :].split(":")
    if not parts[0] or len(parts) > 3:
        raise ValueError(f"{spec!r}: expected hf:NAME, hf:NAME:SPLIT or hf:NAME:CONFIG:SPLIT")
    name, config, spec_split = parts[0], parts[1] if len(parts) == 3 else None, parts[-1] if len(parts) > 1 else None
    if split is not None and spec_split is not None and split != spec_split:
        raise ValueError(f"{spec!r} names split {spec_split!r} but split={split!r} was passed")
    datasets = _require_datasets(f"loading {spec!r}")
    chosen = split or spec_split or "train"
    try:
        dataset = datasets.load_dataset(name, config, split=chosen)
    except ValueError as e:  # e.g. an unknown split: keep the library's message, name the source
        raise DataError(f"{spec}: {e}") from e
    return _dataset_table(dataset, spec, limit)


def read_table(source: Any, split: str | None, limit: int | None) -> Table:
    """Any supported source (file, ``hf:`` name, ``datasets`` object, directory, list of dicts) as a ``Table``."""
    if isinstance(source, str) and source.startswith("hf:"):
        return _hf_hub_table(source, split, limit)
    if type(source).__module__.split(".")[0] == "datasets":
        name = f"<datasets.{type(source).__name__}>"
        if isinstance(source, Mapping):  # DatasetDict / IterableDatasetDict
            chosen, dataset = _pick_split(source, split, name)
            return _dataset_table(dataset, f"{name}[{chosen}]", limit)
        _no_split(split, name)
        return _dataset_table(source, name, limit)
    if isinstance(source, list | tuple):
        _no_split(split, "an in-memory list")
        return Table("<list>", "row", list(enumerate(source[:limit] if limit is not None else source, 1)))
    if not isinstance(source, str | os.PathLike):
        raise TypeError(
            f"source must be a path, 'hf:NAME', a datasets Dataset or a list of dicts, got {type(source).__name__}"
        )
    path, name = Path(source), os.fspath(source)
    if not path.exists():
        raise FileNotFoundError(f"{name}: no such file or directory")
    if path.is_dir():
        if not any((path / f).exists() for f in ("dataset_info.json", "dataset_dict.json", "state.json")):
            raise DataError(f"{name}: a directory that is not a datasets.save_to_disk() folder")
        dataset = _require_datasets(f"loading the directory {name!r}").load_from_disk(name)
        if isinstance(dataset, Mapping):
            chosen, dataset = _pick_split(dataset, split, name)
            return _dataset_table(dataset, f"{name}[{chosen}]", limit)
        _no_split(split, name)
        return _dataset_table(dataset, name, limit)
    _no_split(split, name)
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return read_jsonl_table(path, name, limit)
    if suffix == ".json":
        return _read_json_table(path, name, limit)
    if suffix in (".parquet", ".pq"):
        return _read_parquet_table(path, name, limit)
    if suffix == ".csv":
        return _read_csv_table(path, name, limit)
    raise DataError(f"{name}: unknown format {suffix!r}; expected .jsonl, .json, .parquet, .csv or a datasets folder")


def _no_split(split: str | None, what: str) -> None:
    if split is not None:
        raise ValueError(f"split={split!r} applies only to Hugging Face dataset dicts and hf:NAME, not to {what}")
