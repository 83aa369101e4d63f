"""The text the built-in tokenizer is trained on: every built-in task's strings, deterministic.

``models.tokenizer`` ships the trained tokenizer as a file, so models never import task code; ``make tokenizer``
rebuilds that file from ``default_corpus()`` after a task's vocabulary changes.
"""

from __future__ import annotations

from rewardloop.envs.arithmetic import arithmetic_corpus
from rewardloop.envs.code import make_code_splits
from rewardloop.envs.reviews import reviews_corpus


def default_corpus() -> list[str]:
    """Text from every built-in task (deterministic), used to train the default tokenizer."""
    train, test = make_code_splits()
    return arithmetic_corpus() + reviews_corpus() + [r["prompt"] + r["completion"] for r in train + test]
