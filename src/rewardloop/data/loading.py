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
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from rewardloop import chat
from rewardloop.data.errors import DataError, Problems, show_value
from rewardloop.data.sources import Table, Unparsed, read_jsonl_table, read_table

Kind = Literal["prompt", "sft", "preference", "kto", "rating", "engagement"]
Messages = list[dict[str, Any]]
_KINDS = ("prompt", "sft", "preference", "kto", "rating", "engagement")


# ---------------------------------------------------------------------------------------------------------------
# Conversational rendering
# ---------------------------------------------------------------------------------------------------------------


class _RenderError(ValueError):
    """The chat template failed on a row, or its output cannot be split into prompt and completion."""


class _Renderer:
    """Messages → text with ``chat.render`` (the tokenizer's chat template, or ``"role: content\\n"`` per message),
    a failing template reported as a row problem, and prompt/completion cut from one rendered conversation."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def render(self, messages: Messages, *, add_generation_prompt: bool) -> str:
        try:
            return chat.render(self.tokenizer, messages, add_generation_prompt=add_generation_prompt)
        except Exception as e:  # templates raise anything: jinja errors, raise_exception("roles must alternate")
            raise _RenderError(f"the chat template failed: {type(e).__name__}: {e}") from e

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
                f"completion cannot be cut from it (prompt renders as {show_value(prompt_text)})"
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
            issues.append(f"field '{name}[{i}]': expected a {{'role', 'content'}} dict, got {show_value(m)}")
        elif not isinstance(m.get("role"), str) or not m["role"]:
            issues.append(f"field '{name}[{i}].role': expected a non-empty string, got {show_value(m.get('role'))}")
        elif not isinstance(m.get("content"), str):
            issues.append(f"field '{name}[{i}].content': expected a string, got {show_value(m.get('content'))}")
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
    issues.append(
        f"field {name!r}: expected a string or a list of {{'role', 'content'}} messages, got {show_value(value)}"
    )
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
    if isinstance(prompt, str):
        return {"prompt": prompt, **_extras(row, ["prompt"])}, issues
    # Conversational: the policy sees the rendered text; reward functions get the messages, as TRL passes them.
    extras = _extras(row, ["prompt", "prompt_messages"])
    return {"prompt": renderer.prompt(prompt), "prompt_messages": prompt, **extras}, issues


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


def _prompt_completion(row: Mapping, renderer: _Renderer, issues: list[str]) -> tuple[str, str] | None:
    """(prompt, completion) as text from the 'prompt' / 'completion' columns (both strings or both message lists)."""
    values = {f: _text_or_messages(row, f, issues) for f in ("prompt", "completion")}
    if issues or not _same_style(values, issues):
        return None
    prompt, completion = values["prompt"], values["completion"]
    return (prompt, completion) if isinstance(prompt, str) else renderer.split(prompt, completion)


def _sft_row(row: Mapping, renderer: _Renderer) -> tuple[dict | None, list[str]]:
    issues: list[str] = []
    if "prompt" in row and "completion" in row:
        if (texts := _prompt_completion(row, renderer, issues)) is None:
            return None, issues
        (prompt, completion), consumed = texts, ["prompt", "completion"]
    elif "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list | tuple):
            return None, [
                f"field 'messages': expected a list of {{'role', 'content'}} messages, got {show_value(messages)}"
            ]
        messages = _check_messages(list(messages), "messages", issues)
        parts = _split_messages(messages, issues) if messages is not None else None
        if parts is None:
            return None, issues
        (prompt, completion), consumed = renderer.split(*parts), ["messages"]
    elif "text" in row:
        text = row["text"]
        if not isinstance(text, str) or not text.strip():
            return None, [f"field 'text': expected a non-empty string, got {show_value(text)}"]
        prompt, completion, consumed = "", text, ["text"]  # plain LM: loss on every token
    else:
        cols = ", ".join(map(str, row)) or "no columns"
        return None, [f"missing columns: need 'prompt' + 'completion', 'messages' or 'text' (row has: {cols})"]
    # A stray 'prompt' / 'completion' next to 'messages' or 'text' must not overwrite the normalised values.
    return {"prompt": prompt, "completion": completion, **_extras(row, [*consumed, "prompt", "completion"])}, issues


def _implicit_prompt(chosen: Messages, rejected: Messages, issues: list[str]) -> tuple[Messages, ...] | None:
    """TRL's extract_prompt: the longest shared message prefix is the prompt."""
    k = 0
    while k < min(len(chosen), len(rejected)) and chosen[k] == rejected[k]:
        k += 1
    if k == 0:
        issues.append("fields 'chosen', 'rejected': no 'prompt' column and no shared first message to use as prompt")
        return None
    return chosen[:k], chosen[k:], rejected[k:]


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _margin(row: Mapping, issues: list[str]) -> dict[str, float]:
    value = row.get("margin")
    if value is None:  # absent, or null in a columnar file
        return {}
    if isinstance(value, bool) or not isinstance(value, int | float) or not _finite(value):
        issues.append(f"field 'margin': expected a finite number, got {show_value(row['margin'])}")
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
        return None, [
            f"fields 'chosen' and 'rejected' are identical ({show_value(chosen)}); the pair carries no preference"
        ]
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


def _number(row: Mapping, name: str, issues: list[str], *, required: bool = True) -> float | None:
    """A finite number (not a bool) in column ``name``; None with an issue otherwise (or None if optional and null)."""
    if name not in row or row[name] is None:
        if required:
            issues.append(
                f"missing column {name!r}" if name not in row else f"field {name!r}: expected a number, got null"
            )
        return None
    value = row[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not _finite(value):
        issues.append(f"field {name!r}: expected a finite number, got {show_value(value)}")
        return None
    return float(value)


def _kto_row(row: Mapping, renderer: _Renderer) -> tuple[dict | None, list[str]]:
    """TRL's unpaired preference format: prompt, completion, label (True = desirable / thumbs-up)."""
    issues: list[str] = []
    texts = _prompt_completion(row, renderer, issues)
    if "label" not in row:
        issues.append("missing column 'label' (a bool: true = desirable, false = undesirable)")
    elif not isinstance(row["label"], bool):
        issues.append(f"field 'label': expected a bool (true / false), got {show_value(row['label'])}")
    if texts is None or issues:
        return None, issues
    extras = _extras(row, ["prompt", "completion", "label"])
    return {"prompt": texts[0], "completion": texts[1], "label": row["label"], **extras}, issues


def _rating_row(row: Mapping, renderer: _Renderer) -> tuple[dict | None, list[str]]:
    """A scored completion: prompt, completion, score (a rating, a watch time, ...)."""
    issues: list[str] = []
    texts = _prompt_completion(row, renderer, issues)
    score = _number(row, "score", issues)
    if texts is None or issues:
        return None, issues
    return {
        "prompt": texts[0],
        "completion": texts[1],
        "score": score,
        **_extras(row, ["prompt", "completion", "score"]),
    }, []


def _engagement_row(row: Mapping, renderer: _Renderer) -> tuple[dict | None, list[str]]:
    """One engagement event on a shown completion (``rewardloop feedback export --format engagement``): prompt,
    completion, event, value, propensity (P(shown | context) in (0, 1], or null when nothing was chosen)."""
    issues: list[str] = []
    texts = _prompt_completion(row, renderer, issues)
    event = row.get("event")
    if not isinstance(event, str) or not event.strip():
        issues.append(f"field 'event': expected a non-empty event name, got {show_value(event)}")
    value = _number(row, "value", issues)
    propensity = _number(row, "propensity", issues, required=False)
    if propensity is not None and not 0.0 < propensity <= 1.0:
        issues.append(f"field 'propensity': expected a probability in (0, 1], got {show_value(row['propensity'])}")
    if texts is None or issues:
        return None, issues
    fields = {"prompt": texts[0], "completion": texts[1], "event": event, "value": value, "propensity": propensity}
    return {**fields, **_extras(row, fields)}, []


_CSV_NUMBERS = {"rating": ("score",), "engagement": ("value", "propensity")}


def csv_cells(row: dict[str, Any], kind: str) -> dict[str, Any]:
    """CSV cells are text: a kto ``label`` cell true/false (any case) becomes a bool, the numeric cells of rating /
    engagement rows become floats (an empty propensity: null). Anything else stays text and is reported as such."""
    row = dict(row)
    if kind == "kto" and isinstance(row.get("label"), str) and row["label"].strip().lower() in ("true", "false"):
        row["label"] = row["label"].strip().lower() == "true"
    for name in _CSV_NUMBERS.get(kind, ()):
        if row.get(name) == "" and name == "propensity":
            row[name] = None
        elif isinstance(row.get(name), str):
            with contextlib.suppress(ValueError):  # a non-numeric cell stays text and is reported by validation
                row[name] = float(row[name])
    return row


_NORMALISERS: dict[str, Callable[[Mapping, _Renderer], tuple[dict | None, list[str]]]] = {
    "prompt": _prompt_row,
    "sft": _sft_row,
    "preference": _preference_row,
    "kto": _kto_row,
    "rating": _rating_row,
    "engagement": _engagement_row,
}


def _check_columns(table: Table, kind: str) -> None:
    """One clear error when a columnar source lacks a required column, instead of one per row."""
    if table.columns is None:
        return
    cols = set(table.columns)
    need = {
        "prompt": [{"prompt"}],
        "sft": [{"prompt", "completion"}, {"messages"}, {"text"}],
        "preference": [{"chosen", "rejected"}],
        "kto": [{"prompt", "completion", "label"}],
        "rating": [{"prompt", "completion", "score"}],
        "engagement": [{"prompt", "completion", "event", "value"}],
    }[kind]
    if not any(option <= cols for option in need):
        wanted = " or ".join(" + ".join(map(repr, sorted(o))) for o in need)
        raise DataError(f"{table.name}: kind={kind!r} needs column(s) {wanted}; the columns are {table.columns}")


def _token_lengths(tokenizer: Any, texts: list[str]) -> list[int]:
    if not texts:
        return []
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def _check_lengths(
    rows: list[dict], wheres: list[str], kind: str, tokenizer: Any, max_length: int, problems: Problems
) -> None:
    """Report rows whose prompt (+ completion / chosen / rejected) is longer than ``max_length`` tokens."""
    n_prompt = _token_lengths(tokenizer, [r["prompt"] for r in rows])
    fields = {"prompt": [], "preference": ["chosen", "rejected"]}.get(kind, ["completion"])
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
    """Load and validate rows of ``kind`` from ``source``: "prompt", "sft", "preference" (pairs), "kto" (unpaired
    thumbs), "rating" (scored completions) or "engagement" (engagement events with propensities).

    Returns dicts with ``prompt`` (+ ``completion`` for sft, + ``chosen``/``rejected`` and optional float ``margin``
    for preference; + ``completion`` and a bool ``label`` for kto, a float ``score`` for rating, ``event``, float
    ``value`` and float-or-None ``propensity`` for engagement) as strings, plus every other column unchanged. Conversational values are rendered with the
    tokenizer's chat template (fallback ``"role: content\\n"``). With ``tokenizer`` and ``max_length``, rows longer
    than ``max_length`` tokens are errors. All problems are raised together as one ``DataError``.
    """
    if kind not in _KINDS:
        raise ValueError(f"kind={kind!r}; expected one of {_KINDS}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit={limit!r}; expected a positive integer or None")
    if max_length is not None and (tokenizer is None or max_length < 1):
        raise ValueError(f"max_length={max_length!r} needs a tokenizer to count tokens and must be >= 1")
    table = read_table(source, split, limit)
    _check_columns(table, kind)
    if not table.rows:
        raise DataError(f"{table.name}: no rows (the dataset is empty)")
    problems, renderer, normalise = Problems(table.name), _Renderer(tokenizer), _NORMALISERS[kind]
    rows: list[dict] = []
    wheres: list[str] = []
    for number, raw in table.rows:
        where = table.where(number)
        if isinstance(raw, Unparsed):
            problems.add(where, raw.message)
            continue
        if not isinstance(raw, Mapping):
            problems.add(where, f"expected an object with named columns, got {show_value(raw)}")
            continue
        try:
            out, issues = normalise(raw if table.typed else csv_cells(raw, kind), renderer)
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
    problems = Problems(name)
    table = read_jsonl_table(Path(path), name, None)
    for lineno, row in table.rows:
        if isinstance(row, Unparsed):
            problems.add(table.where(lineno), row.message)
        elif not isinstance(row, dict):
            problems.add(table.where(lineno), f"expected a JSON object, got {show_value(row)}")
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
                    raise DataError(f"{path} row {i}: cannot be written as JSON ({e}): {show_value(row)}") from e
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates the file 0600; give it the replaced file's mode, or the usual 0644 for a new file.
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
