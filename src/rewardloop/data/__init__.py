"""Dataset loading and validation in TRL's column conventions (prompt / sft / preference); see docs/guides/data.md."""

from rewardloop.data.loading import MAX_ERRORS, DataError, load_rows, read_jsonl, save_jsonl

__all__ = ["MAX_ERRORS", "DataError", "load_rows", "read_jsonl", "save_jsonl"]
