"""Built-in tasks and user datasets behind one config section, ``task:``.

A task is train/test rows (``prompt``, ``completion`` for SFT, plus columns such as ``answer``), the reward function
that scores completions, and an evaluation metric name. Built-ins: ``arithmetic``, ``reviews``, ``code``,
``strings``, ``summarise``, ``translate``, ``dialogue`` (SFT rows of the best conversations with the simulated
shopper; RL runs on the environment itself, ``env: rewardloop.envs.dialogue:ShopperEnv``); or ``name: dataset`` with ``path`` (JSONL / Parquet / ``hf:``) and
``reward`` (built-in name or plug-in path).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_serializer, model_validator

from rewardloop.config import Section
from rewardloop.rewards.registry import RewardFn, resolve_reward


class TaskConfig(Section):
    name: Literal["arithmetic", "reviews", "code", "strings", "summarise", "translate", "dialogue", "dataset"] = (
        "arithmetic"
    )
    seed: int = 0
    n_train: int = Field(4000, ge=1)
    n_test: int = Field(200, ge=1)
    digits: tuple[int, int] = Field((1, 2), description="arithmetic: min/max operand digits")
    ops: list[str] = Field(default_factory=lambda: ["+"], description="arithmetic: operators from + - *")
    demo_error: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="arithmetic: fraction of training demonstrations written as '85.' (careless format)",
    )
    demos_per_problem: int = Field(1, ge=1, description="arithmetic: demonstrations per training problem")
    string_ops: list[str] = Field(
        default_factory=lambda: ["reverse"], description="strings: operations from reverse, sort, rotate, swap"
    )
    string_length: tuple[int, int] = Field((3, 6), description="strings: min/max items per sequence")
    string_items: Literal["letters", "words"] = Field("letters", description="strings: letters or short words")
    alphabet: str = Field("abcdefghij", description="strings: the letters items are drawn from")
    n_sentences: tuple[int, int] = Field((3, 5), description="summarise: min/max sentences per document")
    adjective_rate: float = Field(0.5, ge=0.0, le=1.0, description="translate: P(a noun has an adjective)")
    path: str | None = Field(None, description="dataset: train file (JSONL/JSON/Parquet) or hf:NAME[:SPLIT]")
    dataset: Any = Field(
        None, exclude=True, description="dataset (Python API): a datasets.Dataset or a list of dicts, instead of path"
    )
    test_dataset: Any = Field(None, exclude=True, description="Python API: the test split, instead of test_path")
    test_path: str | None = Field(None, description="dataset: test file; default: the last n_test rows of `path`")
    reward: str | Callable[..., Any] | None = Field(
        None, description="reward name, plug-in path or (Python API) a callable; default: the task's own"
    )

    @field_serializer("reward")
    def _reward_name(self, fn: Any) -> str | None:
        return fn if fn is None or isinstance(fn, str) else f"{fn.__module__}:{getattr(fn, '__qualname__', fn)}"

    @model_validator(mode="after")
    def _check(self) -> TaskConfig:
        if self.dataset is not None and self.name == "arithmetic" and "name" not in self.model_fields_set:
            self.__dict__["name"] = "dataset"  # passing rows is enough to say so (no re-validation loop)
        if self.name == "dataset" and not self.path and self.dataset is None:
            raise ValueError(
                "task.name 'dataset' needs task.path (a JSONL/JSON/Parquet file or hf:NAME) or, from Python, "
                "task.dataset (a datasets.Dataset or a list of dicts)"
            )
        return self


RENAMED_TO_TASK = (
    "one dataset key family for every command — task.name: dataset with task.path: FILE (and "
    "task.test_path: FILE), as for sft, ppo, grpo, dpo and reward"
)


def reject_keys(data: Any, keys: set[str], where: str) -> Any:
    """A ``mode="before"`` validator's body: old dataset keys fail with the name of the new one."""
    if isinstance(data, dict) and (found := keys & set(data)):
        raise ValueError(f"{where}{' / '.join(sorted(found))} was renamed: {RENAMED_TO_TASK}")
    return data


def check_preference_task(
    task: TaskConfig, command: str, feedback: str = "preference pairs (prompt/chosen/rejected)"
) -> None:
    """Learners from human feedback read it from a dataset (``task.name: dataset``) or simulate it on ``reviews``
    (the annotator's pairs, thumbs from the gold reward); ``feedback`` names what and which columns."""
    if task.name not in ("reviews", "dataset"):
        what, _, columns = feedback.partition(" (")
        raise ValueError(
            f"task.name={task.name!r}: {command} learns from {what} — task.name: dataset with task.path "
            f"({columns.rstrip(')')}), or task.name: reviews (simulated {what})"
        )


@dataclass
class Task:
    name: str
    train: list[dict[str, Any]]
    test: list[dict[str, Any]]
    reward_fn: RewardFn

    def score(self, rows: list[dict[str, Any]], completions: list[str]) -> list[float]:
        """Rewards of ``completions`` for ``rows``, passing the rows' extra columns to the reward function."""
        columns = {k: [r.get(k) for r in rows] for k in rows[0] if k not in ("prompt", "completion")} if rows else {}
        return [float(x) for x in self.reward_fn([r["prompt"] for r in rows], completions, **columns)]


def _from_examples(examples) -> list[dict[str, Any]]:
    # a row's own "completion" column (e.g. a noisy demonstration) overrides the reference answer for SFT
    return [{"prompt": e.prompt, "answer": e.answer, "completion": e.answer, **e.columns} for e in examples]


def load_task(cfg: TaskConfig, kind: str = "prompt", tokenizer=None, max_length: int | None = None) -> Task:
    """Rows and reward for the configured task (``kind``: 'prompt' rows for RL, 'sft' rows with completions)."""
    if cfg.name == "arithmetic":
        from rewardloop.envs.arithmetic import make_arithmetic_splits
        from rewardloop.rewards.builtin import exact_match

        train, test = make_arithmetic_splits(
            cfg.seed, cfg.n_train, cfg.n_test, tuple(cfg.digits), tuple(cfg.ops), cfg.demo_error, cfg.demos_per_problem
        )
        rows_train, rows_test, reward = _from_examples(train), _from_examples(test), exact_match
    elif cfg.name == "reviews":
        from rewardloop.envs.reviews import make_reviews_splits
        from rewardloop.rewards.reviews import reviews_reward

        train, test = make_reviews_splits(cfg.seed, cfg.n_train, cfg.n_test)
        rows_train, rows_test, reward = _from_examples(train), _from_examples(test), reviews_reward
    elif cfg.name == "strings":
        from rewardloop.envs.strings import make_strings_splits
        from rewardloop.rewards.builtin import exact_match

        train, test = make_strings_splits(
            cfg.seed, cfg.n_train, cfg.n_test, tuple(cfg.string_ops), tuple(cfg.string_length), cfg.string_items,
            cfg.alphabet,
        )  # fmt: skip
        rows_train, rows_test, reward = _from_examples(train), _from_examples(test), exact_match
    elif cfg.name == "summarise":
        from rewardloop.envs.summarise import make_summarise_splits
        from rewardloop.rewards.text_metrics import rouge_l

        train, test = make_summarise_splits(cfg.seed, cfg.n_train, cfg.n_test, tuple(cfg.n_sentences))
        rows_train, rows_test, reward = _from_examples(train), _from_examples(test), rouge_l
    elif cfg.name == "translate":
        from rewardloop.envs.translate import make_translate_splits
        from rewardloop.rewards.text_metrics import chrf

        train, test = make_translate_splits(cfg.seed, cfg.n_train, cfg.n_test, cfg.adjective_rate)
        rows_train, rows_test, reward = _from_examples(train), _from_examples(test), chrf
    elif cfg.name == "dialogue":
        from rewardloop.envs.dialogue import dialogue_splits
        from rewardloop.rewards.builtin import exact_match

        rows_train, rows_test = dialogue_splits(cfg.seed, cfg.n_train, cfg.n_test)
        reward = exact_match  # each row is one turn: its best action
    elif cfg.name == "code":
        from rewardloop.envs.code import make_code_splits
        from rewardloop.rewards.code_tests import code_tests_reward

        rows_train, rows_test = make_code_splits(cfg.seed)
        reward = code_tests_reward
    else:
        from rewardloop.data import load_rows

        source = cfg.dataset if cfg.dataset is not None else cfg.path
        rows = load_rows(source, kind=kind, tokenizer=tokenizer, max_length=max_length)
        test_source = cfg.test_dataset if cfg.test_dataset is not None else cfg.test_path
        if test_source is not None:
            rows_train = rows
            rows_test = load_rows(test_source, kind=kind, tokenizer=tokenizer, max_length=max_length)
        else:
            if len(rows) < 2:
                raise ValueError(
                    f"{cfg.path or 'task.dataset'}: need at least 2 rows to split off a test set, got {len(rows)}"
                )
            n_test = min(cfg.n_test, len(rows) // 2)
            rows_train, rows_test = rows[:-n_test], rows[-n_test:]
        reward = None
    reward_fn = resolve_reward(cfg.reward) if cfg.reward else reward
    return Task(cfg.name, rows_train, rows_test, reward_fn)
