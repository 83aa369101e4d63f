"""Dataset loading and validation in TRL's column conventions (prompt / sft / preference); see docs/guides/data.md."""

from rewardloop.data.errors import MAX_ERRORS, DataError
from rewardloop.data.loading import load_rows, read_jsonl, save_jsonl

__all__ = ["MAX_ERRORS", "DataError", "load_rows", "read_jsonl", "save_jsonl"]
