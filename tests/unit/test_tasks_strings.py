"""The `strings` task: splits, answers from an independent solver, config keys, the edit-similarity reward."""

from __future__ import annotations

import pytest

from rewardloop.config import ConfigError, load_config
from rewardloop.envs.strings import STRING_OPS, WORDS, make_strings_splits
from rewardloop.envs.tasks import TaskConfig, load_task
from rewardloop.rewards.builtin import edit_distance, edit_similarity
from rewardloop.rewards.registry import resolve_reward


def solve(prompt: str) -> str:
    """'reverse: c a t =' → 't a c', written independently of STRING_OPS."""
    op, _, body = prompt.removesuffix(" =").partition(": ")
    xs = body.split()
    if op == "reverse":
        ys = list(reversed(xs))
    elif op == "sort":
        ys = sorted(xs)
    elif op == "rotate":
        ys = [*xs[1:], xs[0]]
    else:
        ys = [xs[-1], *xs[1:-1], xs[0]] if len(xs) > 1 else xs
    return " ".join(ys)


def test_strings_splits_are_deterministic_disjoint_and_correct():
    ops = tuple(STRING_OPS)
    train, test = make_strings_splits(seed=2, n_train=600, n_test=100, ops=ops, length=(2, 5))
    assert (train, test) == make_strings_splits(seed=2, n_train=600, n_test=100, ops=ops, length=(2, 5))
    assert len(train) == 600 and len(test) == 100
    assert not {e.prompt for e in train} & {e.prompt for e in test}
    assert len({e.prompt for e in train}) == 600
    assert all(e.answer == solve(e.prompt) for e in train + test)
    assert all(e.columns["completion"] == " " + e.answer for e in train)
    assert {e.prompt.partition(":")[0] for e in train} == set(ops)
    assert {len(e.answer.split()) for e in train} == {2, 3, 4, 5}


def test_strings_words_and_alphabet():
    train, _ = make_strings_splits(seed=0, n_train=200, n_test=10, items="words", ops=("sort",))
    assert all(set(e.answer.split()) <= set(WORDS) for e in train)
    train, _ = make_strings_splits(seed=0, n_train=50, n_test=10, alphabet="xyz", length=(4, 4))
    assert {c for e in train for c in e.answer.split()} == set("xyz")


def test_strings_items_are_single_tokens(tokenizer):
    # every item costs one token, in the prompt and in the SFT completion alike
    train, _ = make_strings_splits(seed=0, n_train=50, n_test=1, items="words")
    for e in train[:20]:
        n = len(e.answer.split())
        assert len(tokenizer(e.columns["completion"], add_special_tokens=False)["input_ids"]) == n


def test_strings_errors_name_the_key():
    with pytest.raises(ValueError, match=r"string_ops.*\['shuffle'\].*reverse"):
        make_strings_splits(ops=("reverse", "shuffle"))
    with pytest.raises(ValueError, match="string_length"):
        make_strings_splits(length=(4, 2))
    with pytest.raises(ValueError, match="only 8 exist"):
        make_strings_splits(n_train=8, n_test=1, alphabet="ab", length=(3, 3))
    with pytest.raises(ValueError, match="alphabet"):
        make_strings_splits(alphabet="aB1")
    with pytest.raises(ConfigError, match="string_items"):
        load_config(TaskConfig, None, ["name=strings", "string_items=digits"])


def test_load_task_strings_from_config_keys():
    cfg = load_config(TaskConfig, None, ["name=strings", "string_ops=[sort, swap]", "n_train=40", "n_test=5"])
    task = load_task(cfg, kind="sft")
    assert len(task.train) == 40 and len(task.test) == 5
    row = task.test[0]
    assert task.score([row], [row["answer"]]) == [1.0]
    assert task.score([row], [" " + row["answer"] + " "]) == [1.0]  # exact match ignores surrounding whitespace
    assert task.score([row], ["x"]) == [0.0]
    partial = load_task(cfg.model_copy(update={"reward": "edit_similarity"}))
    assert 0.0 < partial.score([row], [row["answer"].split()[0]])[0] < 1.0


def test_edit_distance_and_similarity_by_hand():
    assert edit_distance(list("kitten"), list("sitting")) == 3
    assert edit_distance([], list("abc")) == 3 and edit_distance(list("ab"), list("ab")) == 0
    answer = ["d c b a"] * 5
    got = edit_similarity(None, ["d c b a", "d c b", "a b c d", "", "d  c b   a"], answer=answer)
    assert got == [1.0, 0.75, 0.0, 0.0, 1.0]  # "a b c d" → "d c b a": 4 substitutions
    assert edit_similarity(None, ["abd"], answer=["abc"], unit="char") == [pytest.approx(2 / 3)]
    assert resolve_reward("edit_similarity") is edit_similarity
    with pytest.raises(ValueError, match="unit"):
        edit_similarity(None, ["a"], answer=["a"], unit="token")
