"""Load prompt / SFT / preference datasets in TRL's column conventions, validated with file and row numbers.

Sources: JSONL, JSON (a list of objects), Parquet, CSV, a Hugging Face ``datasets`` object, a ``save_to_disk``
directory, ``hf:NAME[:SPLIT]`` / ``hf:NAME:CONFIG:SPLIT`` (``datasets.load_dataset``), or a list of dicts.
Every problem in the data is collected (up to ``MAX_ERRORS`` shown) and raised as one ``DataError``, so a user fixes
the file in one pass. Conversational columns are rendered to strings with the tokenizer's chat template (TRL's
``apply_chat_template`` approach: the completion is the full conversation minus the rendered prompt), or with the
fallback ``"role: content\\n"`` rendering when there is no template. See docs/guides/data.md.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Kind = Literal["prompt", "sft", "preference"]
Messages = list[dict[str, Any]]

MAX_ERRORS = 20  # errors shown in one DataError message; the rest are counted
_VALUE_CHARS = 80  # a shown value is truncated to this many characters
_KINDS = ("prompt", "sft", "preference")


class DataError(ValueError):
    """Invalid data; the message names the file, row (JSONL/CSV: 1-based line), field and the offending value.

    ``errors`` holds the shown error lines, ``total`` the number of problems found (may exceed ``len(errors)``).
    """

    def __init__(self, message: str, errors: Iterable[str] = (), total: int | None = None) -> None:
        super().__init__(message)
        self.errors = list(errors) or [message]
        self.total = len(self.errors) if total is None else total


def _show(value: Any) -> str:
    """Type name and truncated repr, e.g. ``int 42`` or ``str 'a very long…'``."""
    text = repr(value)
    if len(text) > _VALUE_CHARS:
        text = text[: _VALUE_CHARS - 1] + "…"
    return f"{type(value).__name__} {text}"


class _Problems:
    """Collects ``"<where>: <message>"`` lines; keeps the first MAX_ERRORS, counts all."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.shown: list[str] = []
        self.total = 0

    def add(self, where: str, message: str) -> None:
        self.total += 1
        if len(self.shown) < MAX_ERRORS:
            self.shown.append(f"{where}: {message}")

    def raise_if_any(self, kind: str) -> None:
        if not self.total:
            return
        lines = [f"{self.name}: {self.total} problem(s) loading {kind!r} rows:", *(f"  {s}" for s in self.shown)]
        if self.total > len(self.shown):
            lines.append(f"  ... and {self.total - len(self.shown)} more")
        raise DataError("\n".join(lines), self.shown, self.total)


# ---------------------------------------------------------------------------------------------------------------
# Reading sources into (row number, raw row) pairs
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class _Table:
    name: str  # shown in errors: the path as given, "hf:...", "<list>", "<datasets.Dataset>"
    unit: str  # "line" (JSONL, CSV: physical line in the file) or "row" (1-based position)
    rows: list[tuple[int, Any]] = field(default_factory=list)
    columns: list[str] | None = None  # known schema (Parquet, CSV, datasets): checked once, up front

    def where(self, number: int) -> str:
        return f"{self.name} {self.unit} {number}"


@dataclass(frozen=True)
class _Unparsed:
    """A line that could not be decoded; kept in row order so its error is reported in place."""

    message: str


def _read_jsonl_table(path: Path, name: str, limit: int | None) -> _Table:
    table = _Table(name, "line")
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if limit is not None and len(table.rows) >= limit:
                break
            try:
                text = raw.decode("utf-8-sig")  # -sig: tolerate a byte-order mark on line 1
            except UnicodeDecodeError as e:
                table.rows.append((lineno, _Unparsed(f"not valid UTF-8 ({e.reason} at byte {e.start})")))
                continue
            if not (text := text.strip()):
                continue
            try:
                table.rows.append((lineno, json.loads(text)))
            except json.JSONDecodeError as e:
                table.rows.append((lineno, _Unparsed(f"invalid JSON ({e.msg} at column {e.colno}): {_show(text)}")))
    return table


def _read_json_table(path: Path, name: str, limit: int | None) -> _Table:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{name}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # one object per line in a .json file: read it as JSON Lines, as `datasets` does
            return _read_jsonl_table(path, name, limit)
        raise DataError(f"{name} line {e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(data, list):
        keys = f" with keys {list(data)[:10]}" if isinstance(data, dict) else ""
        raise DataError(f"{name}: expected a JSON list of objects (one per row), got {type(data).__name__}{keys}")
    return _Table(name, "row", list(enumerate(data[:limit] if limit is not None else data, 1)))


def _read_parquet_table(path: Path, name: str, limit: int | None) -> _Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        table = _Table(name, "row", columns=list(pf.schema_arrow.names))
        for batch in pf.iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                if limit is not None and len(table.rows) >= limit:
                    return table
                table.rows.append((len(table.rows) + 1, row))
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{name}: not a readable Parquet file ({e})") from None
    return table


def _read_csv_table(path: Path, name: str, limit: int | None) -> _Table:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        table = _Table(name, "line", columns=list(reader.fieldnames or []))
        for row in reader:
            if limit is not None and len(table.rows) >= limit:
                break
            if None in row:  # DictReader puts fields beyond the header under the key None
                row["<extra fields>"] = row.pop(None)
            _csv_margin(row)
            table.rows.append((reader.line_num, row))
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


def _dataset_table(dataset: Any, name: str, limit: int | None) -> _Table:
    """Rows of a ``datasets.Dataset`` / ``IterableDataset`` (iteration yields one dict per row)."""
    table = _Table(name, "row", columns=getattr(dataset, "column_names", None))
    for number, row in enumerate(dataset, 1):
        if limit is not None and number > limit:
            break
        table.rows.append((number, row))
    return table


def _hf_hub_table(spec: str, split: str | None, limit: int | None) -> _Table:
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


def _read_table(source: Any, split: str | None, limit: int | None) -> _Table:
    """Dispatch on the source type."""
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
        return _Table("<list>", "row", list(enumerate(source[:limit] if limit is not None else source, 1)))
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
        return _read_jsonl_table(path, name, limit)
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


# ---------------------------------------------------------------------------------------------------------------
# Conversational rendering
# ---------------------------------------------------------------------------------------------------------------


class _RenderError(ValueError):
    """The chat template failed on a row, or its output cannot be split into prompt and completion."""


class _Renderer:
    """Messages → text: the tokenizer's chat template, or ``"role: content\\n"`` per message when there is none.

    The fallback prompt ends with the generation prompt ``"assistant:"`` so the completion starts with a space,
    the same text as the project's own tokenizer template (rewardloop.models.tokenizer.CHAT_TEMPLATE).
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer if getattr(tokenizer, "chat_template", None) else None

    def render(self, messages: Messages, *, add_generation_prompt: bool) -> str:
        if self.tokenizer is not None:
            try:
                return self.tokenizer.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=add_generation_prompt
                )
            except Exception as e:  # templates raise anything: jinja errors, raise_exception("roles must alternate")
                raise _RenderError(f"the chat template failed: {type(e).__name__}: {e}") from e
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
        return text + ("assistant:" if add_generation_prompt else "")

    def prompt(self, messages: Messages) -> str:
        # A prompt ending in an assistant turn is already "open"; adding a generation prompt would start another.
        return self.render(messages, add_generation_prompt=messages[-1]["role"] != "assistant")

    def split(self, prompt: Messages, completion: Messages) -> tuple[str, str]:
        """(prompt text, completion text) with completion = render(prompt + completion) minus the rendered prompt."""
        prompt_text = self.prompt(prompt)
        full = self.render(prompt + completion, add_generation_prompt=False)
        if not full.startswith(prompt_text):
            raise _RenderError(
                "the chat template renders the prompt differently inside the full conversation, so the "
                f"completion cannot be cut from it (prompt renders as {_show(prompt_text)})"
            )
        return prompt_text, full[len(prompt_text) :]


# ---------------------------------------------------------------------------------------------------------------
# Row validation: each normaliser returns (normalised row or None, list of "field ...: problem" strings)
# ---------------------------------------------------------------------------------------------------------------


def _check_messages(value: list, name: str, issues: list[str]) -> Messages | None:
    n_before = len(issues)
    if not value:
        issues.append(f"field {name!r}: empty message list")
        return None
    for i, m in enumerate(value):
        if not isinstance(m, Mapping):
            issues.append(f"field '{name}[{i}]': expected a {{'role', 'content'}} dict, got {_show(m)}")
        elif not isinstance(m.get("role"), str) or not m["role"]:
            issues.append(f"field '{name}[{i}].role': expected a non-empty string, got {_show(m.get('role'))}")
        elif not isinstance(m.get("content"), str):
            issues.append(f"field '{name}[{i}].content': expected a string, got {_show(m.get('content'))}")
    if len(issues) > n_before:
        return None
    if not any(m["content"].strip() for m in value):
        issues.append(f"field {name!r}: every message has empty content")
        return None
    return [dict(m) for m in value]


def _text_or_messages(row: Mapping, name: str, issues: list[str]) -> str | Messages | None:
    """A non-empty string or a valid message list; None (with an issue) otherwise."""
    if name not in row:
        issues.append(f"missing column {name!r} (row has: {', '.join(map(str, row)) or 'no columns'})")
        return None
    value = row[name]
    if isinstance(value, str):
        if not value.strip():
            issues.append(f"field {name!r}: empty or whitespace-only string")
            return None
        return value
    if isinstance(value, list | tuple):
        return _check_messages(list(value), name, issues)
    issues.append(f"field {name!r}: expected a string or a list of {{'role', 'content'}} messages, got {_show(value)}")
    return None


def _same_style(values: dict[str, str | Messages], issues: list[str]) -> bool:
    """Columns of one row must all be strings or all be message lists."""
    if len({isinstance(v, str) for v in values.values()}) == 1:
        return True
    styles = ", ".join(f"{k!r} is {'a string' if isinstance(v, str) else 'a message list'}" for k, v in values.items())
    issues.append(f"fields {', '.join(map(repr, values))}: mixed plain-text and conversational values ({styles})")
    return False


def _extras(row: Mapping, consumed: Iterable[str]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in consumed}


def _prompt_row(row: Mapping, renderer: _Renderer) -> tuple[dict | None, list[str]]:
    issues: list[str] = []
    prompt = _text_or_messages(row, "prompt", issues)
    if prompt is None:
        return None, issues
    text = prompt if isinstance(prompt, str) else renderer.prompt(prompt)
    return {"prompt": text, **_extras(row, ["prompt"])}, issues


def _split_messages(messages: Messages, issues: list[str]) -> tuple[Messages, Messages] | None:
    """The trailing assistant turns are the completion; everything before them is the prompt."""
    k = len(messages)
    while k > 0 and messages[k - 1]["role"] == "assistant":
        k -= 1
    if k == len(messages):
        issues.append(f"field 'messages': the last turn is {messages[-1]['role']!r}; expected an assistant turn")
        return None
    if k == 0:
        issues.append("field 'messages': only assistant turns; expected a user/system turn before them")
        return None
    return messages[:k], messages[k:]


def _sft_row(row: Mapping, renderer: _Renderer) -> tuple[dict | None, list[str]]:
    issues: list[str] = []
    if "prompt" in row and "completion" in row:
        values = {f: _text_or_messages(row, f, issues) for f in ("prompt", "completion")}
        if issues or not _same_style(values, issues):
            return None, issues
        prompt, completion = values["prompt"], values["completion"]
        consumed = ["prompt", "completion"]
        if not isinstance(prompt, str):
            prompt, completion = renderer.split(prompt, completion)
    elif "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list | tuple):
            return None, [f"field 'messages': expected a list of {{'role', 'content'}} messages, got {_show(messages)}"]
        messages = _check_messages(list(messages), "messages", issues)
        parts = _split_messages(messages, issues) if messages is not None else None
        if parts is None:
            return None, issues
        (prompt, completion), consumed = renderer.split(*parts), ["messages"]
    elif "text" in row:
        text = row["text"]
        if not isinstance(text, str) or not text.strip():
            return None, [f"field 'text': expected a non-empty string, got {_show(text)}"]
        prompt, completion, consumed = "", text, ["text"]  # plain LM: loss on every token
    else:
        cols = ", ".join(map(str, row)) or "no columns"
        return None, [f"missing columns: need 'prompt' + 'completion', 'messages' or 'text' (row has: {cols})"]
    return {"prompt": prompt, "completion": completion, **_extras(row, consumed)}, issues


def _implicit_prompt(chosen: Messages, rejected: Messages, issues: list[str]) -> tuple[Messages, ...] | None:
    """TRL's extract_prompt: the longest shared message prefix is the prompt."""
    k = 0
    while k < min(len(chosen), len(rejected)) and chosen[k] == rejected[k]:
        k += 1
    if k == 0:
        issues.append("fields 'chosen', 'rejected': no 'prompt' column and no shared first message to use as prompt")
        return None
    return chosen[:k], chosen[k:], rejected[k:]


def _margin(row: Mapping, issues: list[str]) -> dict[str, float]:
    value = row.get("margin")
    if value is None:  # absent, or null in a columnar file
        return {}
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        issues.append(f"field 'margin': expected a finite number, got {_show(row['margin'])}")
        return {}
    return {"margin": float(value)}


def _preference_pair(row: Mapping, renderer: _Renderer) -> tuple[tuple[str, str, str] | None, list[str]]:
    """(prompt, chosen, rejected) as text, or None with the problems found."""
    issues: list[str] = []
    names = ["prompt", "chosen", "rejected"] if "prompt" in row else ["chosen", "rejected"]
    values = {f: _text_or_messages(row, f, issues) for f in names}
    if issues or not _same_style(values, issues):
        return None, issues
    prompt, chosen, rejected = values.get("prompt"), values["chosen"], values["rejected"]
    if isinstance(chosen, str) and prompt is None:
        hint = "plain-text 'chosen'/'rejected' need one; only conversational pairs have an implicit prompt"
        return None, [f"missing column 'prompt': {hint}"]
    if not isinstance(chosen, str):
        if prompt is None:
            if (parts := _implicit_prompt(chosen, rejected, issues)) is None:
                return None, issues
            prompt, chosen, rejected = parts
            if not chosen or not rejected:
                which = "chosen" if not chosen else "rejected"
                return None, [f"field {which!r}: nothing left after the prompt shared with the other response"]
        (prompt, chosen), (_, rejected) = renderer.split(prompt, chosen), renderer.split(prompt, rejected)
    if chosen == rejected:
        # Identical responses give log-ratio differences of exactly 0 for every parameter: zero DPO / Bradley–Terry
        # gradient, yet they dilute the batch mean. It is almost always a data bug (a copied column).
        return None, [f"fields 'chosen' and 'rejected' are identical ({_show(chosen)}); the pair carries no preference"]
    return (prompt, chosen, rejected), issues


def _preference_row(row: Mapping, renderer: _Renderer) -> tuple[dict | None, list[str]]:
    issues: list[str] = []
    margin = _margin(row, issues)
    pair, pair_issues = _preference_pair(row, renderer)
    if pair is None or issues:
        return None, issues + pair_issues
    prompt, chosen, rejected = pair
    extras = _extras(row, ["prompt", "chosen", "rejected", "margin"])
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, **margin, **extras}, pair_issues


_NORMALISERS: dict[str, Callable[[Mapping, _Renderer], tuple[dict | None, list[str]]]] = {
    "prompt": _prompt_row,
    "sft": _sft_row,
    "preference": _preference_row,
}


def _check_columns(table: _Table, kind: str) -> None:
    """One clear error when a columnar source lacks a required column, instead of one per row."""
    if table.columns is None:
        return
    cols = set(table.columns)
    need = {
        "prompt": [{"prompt"}],
        "sft": [{"prompt", "completion"}, {"messages"}, {"text"}],
        "preference": [{"chosen", "rejected"}],
    }[kind]
    if not any(option <= cols for option in need):
        wanted = " or ".join(" + ".join(map(repr, sorted(o))) for o in need)
        raise DataError(f"{table.name}: kind={kind!r} needs column(s) {wanted}; the columns are {table.columns}")


def _token_lengths(tokenizer: Any, texts: list[str]) -> list[int]:
    if not texts:
        return []
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _check_lengths(
    rows: list[dict], wheres: list[str], kind: str, tokenizer: Any, max_length: int, problems: _Problems
) -> None:
    """Report rows whose prompt (+ completion / chosen / rejected) is longer than ``max_length`` tokens."""
    n_prompt = _token_lengths(tokenizer, [r["prompt"] for r in rows])
    fields = {"prompt": [], "sft": ["completion"], "preference": ["chosen", "rejected"]}[kind]
    n_fields = {f: _token_lengths(tokenizer, [r[f] for r in rows]) for f in fields}
    for i, where in enumerate(wheres):
        lengths = {f"prompt+{f}": n_prompt[i] + n_fields[f][i] for f in fields} or {"prompt": n_prompt[i]}
        for what, n in lengths.items():
            if n > max_length:
                problems.add(where, f"{what} is {n} tokens, longer than max_length={max_length}")


def load_rows(
    source: Any,
    *,
    kind: Kind,
    tokenizer: Any = None,
    max_length: int | None = None,
    split: str | None = None,
    limit: int | None = None,
) -> list[dict]:
    """Load and validate rows of ``kind`` ("prompt", "sft" or "preference") from ``source``.

    Returns dicts with ``prompt`` (+ ``completion`` for sft, + ``chosen``/``rejected`` and optional float ``margin``
    for preference) as strings, plus every other column unchanged. Conversational values are rendered with the
    tokenizer's chat template (fallback ``"role: content\\n"``). With ``tokenizer`` and ``max_length``, rows longer
    than ``max_length`` tokens are errors. All problems are raised together as one ``DataError``.
    """
    if kind not in _KINDS:
        raise ValueError(f"kind={kind!r}; expected one of {_KINDS}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit={limit!r}; expected a positive integer or None")
    if max_length is not None and (tokenizer is None or max_length < 1):
        raise ValueError(f"max_length={max_length!r} needs a tokenizer to count tokens and must be >= 1")
    table = _read_table(source, split, limit)
    _check_columns(table, kind)
    if not table.rows:
        raise DataError(f"{table.name}: no rows (the dataset is empty)")
    problems, renderer, normalise = _Problems(table.name), _Renderer(tokenizer), _NORMALISERS[kind]
    rows: list[dict] = []
    wheres: list[str] = []
    for number, raw in table.rows:
        where = table.where(number)
        if isinstance(raw, _Unparsed):
            problems.add(where, raw.message)
            continue
        if not isinstance(raw, Mapping):
            problems.add(where, f"expected an object with named columns, got {_show(raw)}")
            continue
        try:
            out, issues = normalise(raw, renderer)
        except _RenderError as e:
            out, issues = None, [str(e)]
        for issue in issues:
            problems.add(where, issue)
        if out is not None:
            rows.append(out)
            wheres.append(where)
    if max_length is not None and rows:
        _check_lengths(rows, wheres, kind, tokenizer, max_length, problems)
    problems.raise_if_any(kind)
    return rows


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSON Lines file (blank lines skipped); every invalid line is reported in one ``DataError``."""
    name = os.fspath(path)
    problems = _Problems(name)
    table = _read_jsonl_table(Path(path), name, None)
    for lineno, row in table.rows:
        if isinstance(row, _Unparsed):
            problems.add(table.where(lineno), row.message)
        elif not isinstance(row, dict):
            problems.add(table.where(lineno), f"expected a JSON object, got {_show(row)}")
    problems.raise_if_any("jsonl")
    return [row for _, row in table.rows]


def save_jsonl(rows: Iterable[Mapping[str, Any]], path: str | os.PathLike) -> None:
    """Write rows as JSON Lines atomically: a temporary file in the same folder, fsync, then rename over ``path``.

    A failure (e.g. a value that is not JSON-serializable, NaN) leaves any existing file at ``path`` untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for i, row in enumerate(rows, 1):
                try:
                    f.write(json.dumps(dict(row), ensure_ascii=False, allow_nan=False) + "\n")
                except (TypeError, ValueError) as e:
                    raise DataError(f"{path} row {i}: cannot be written as JSON ({e}): {_show(row)}") from e
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates the file 0600; give it the replaced file's mode, or the usual 0644 for a new file.
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
