"""``DataError`` and the collector that gathers every problem in a dataset into one message."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

MAX_ERRORS = 20  # errors shown in one DataError message; the rest are counted
_VALUE_CHARS = 80  # a shown value is truncated to this many characters


class DataError(ValueError):
    """Invalid data; the message names the file, row (JSONL/CSV: 1-based line), field and the offending value.

    ``errors`` holds the shown error lines, ``total`` the number of problems found (may exceed ``len(errors)``).
    """

    def __init__(self, message: str, errors: Iterable[str] = (), total: int | None = None) -> None:
        super().__init__(message)
        self.errors = list(errors) or [message]
        self.total = len(self.errors) if total is None else total


def show_value(value: Any) -> str:
    """Type name and truncated repr, e.g. ``int 42`` or ``str 'a very long…'``."""
    try:
        text = repr(value)
    except ValueError:  # an int beyond sys.get_int_max_str_digits(), possibly nested
        text = "<too long to show>"
    if len(text) > _VALUE_CHARS:
        text = text[: _VALUE_CHARS - 1] + "…"
    return f"{type(value).__name__} {text}"


class Problems:
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
