"""Built-in tasks and ``load_task``: arithmetic splits, exact match, environments, reviews, user datasets."""

from __future__ import annotations

import json

import pytest

from rewardloop.config import ConfigError, load_config
from rewardloop.envs.arithmetic import ArithmeticEnv, make_arithmetic_splits
from rewardloop.envs.base import DatasetEnv, Environment, Example
from rewardloop.envs.tasks import TaskConfig, load_task
from rewardloop.rewards.builtin import exact_match


def solve(prompt: str) -> int:
    """'37+48=' → 85 (an independent parser, not the generator's own table)."""
    body = prompt.removesuffix("=")
    for op in "+*":
        if op in body:
            a, b = body.split(op)
            return int(a) + int(b) if op == "+" else int(a) * int(b)
    a, _, b = body.rpartition("-")  # a difference whose operands are non-negative
    return int(a) - int(b)


def test_arithmetic_splits_are_deterministic_disjoint_and_correct():
    train, test = make_arithmetic_splits(seed=3, n_train=500, n_test=100)
    again_train, again_test = make_arithmetic_splits(seed=3, n_train=500, n_test=100)
    assert (train, test) == (again_train, again_test)
    assert make_arithmetic_splits(seed=4, n_train=500, n_test=100)[1] != test
    assert len(train) == 500 and len(test) == 100
    prompts_train, prompts_test = {e.prompt for e in train}, {e.prompt for e in test}
    assert len(prompts_train) == 500 and len(prompts_test) == 100  # no duplicates within a split
    assert not prompts_train & prompts_test  # and none across
    assert all(int(e.answer) == solve(e.prompt) for e in train + test)
    operands = [int(x) for e in train for x in e.prompt.removesuffix("=").split("+")]
    assert min(operands) >= 0 and max(operands) <= 99 and any(x < 10 for x in operands)


def test_arithmetic_digits_and_operators():
    train, test = make_arithmetic_splits(seed=0, n_train=300, n_test=50, digits=(2, 3), ops=("-", "*"))
    for e in train + test:
        op = "*" if "*" in e.prompt else "-"
        a, b = e.prompt.removesuffix("=").split(op)
        assert 10 <= int(a) <= 999 and 10 <= int(b) <= 999
        assert int(e.answer) == solve(e.prompt)
    assert {("*" in e.prompt) for e in train} == {True, False}
    assert any(e.answer.startswith("-") for e in train)  # differences may be negative


def test_arithmetic_split_errors():
    # one-digit addition has exactly 10 · 10 = 100 problems
    assert len(make_arithmetic_splits(n_train=90, n_test=10, digits=(1, 1))[0]) == 90
    with pytest.raises(ValueError, match="only 100 exist"):
        make_arithmetic_splits(n_train=91, n_test=10, digits=(1, 1))
    with pytest.raises(ValueError, match="digits"):
        make_arithmetic_splits(digits=(3, 2))
    with pytest.raises(ValueError, match=r"unknown operators \['/'\]"):
        make_arithmetic_splits(ops=("+", "/"))


def test_exact_match():
    completions = ["85", " 85\n", "86", "", "85 apples", "085"]
    assert exact_match(["37+48="] * 6, completions, answer=["85"] * 6) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert exact_match(["1-3="], ["-2"], answer=[-2]) == [1.0]  # non-string answers compare as text
    with pytest.raises(ValueError):
        exact_match(["a", "b"], ["1"], answer=["1", "2"])


def test_arithmetic_env_is_a_one_step_environment():
    train, _ = make_arithmetic_splits(n_train=20, n_test=5)
    env = ArithmeticEnv(train, seed=0)
    assert isinstance(env, Environment)
    with pytest.raises(RuntimeError, match="reset"):
        env.step("1")
    prompt = env.reset(seed=7)
    assert env.reset(seed=7) == prompt  # seeded
    obs, reward, done, info = env.step(str(solve(prompt)))
    assert (obs, reward, done) == (None, 1.0, True) and info["row"]["prompt"] == prompt
    env.reset(seed=7)
    assert env.step("wrong")[1] == 0.0


def test_dataset_env_passes_columns_to_the_reward():
    seen = {}

    def reward(prompts, completions, *, target, **_):
        seen.update(prompts=prompts, target=target)
        return [float(len(completions[0]) == target[0])]

    env = DatasetEnv([{"prompt": "say three letters", "target": 3}], reward)
    env.reset()
    assert env.step("abc")[1] == 1.0 and seen == {"prompts": ["say three letters"], "target": [3]}
    with pytest.raises(ValueError, match="at least one row"):
        DatasetEnv([], reward)
    assert Example("p", "a", {"x": 1}).as_row() == {"prompt": "p", "answer": "a", "x": 1}


def test_load_task_arithmetic():
    task = load_task(TaskConfig(n_train=50, n_test=10, seed=1), kind="sft")
    assert task.name == "arithmetic" and len(task.train) == 50 and len(task.test) == 10
    row = task.test[0]
    assert set(row) >= {"prompt", "completion", "answer"} and row["completion"] == row["answer"]
    answers = [r["answer"] for r in task.test]
    assert task.score(task.test, answers) == [1.0] * 10
    assert task.score(task.test, ["nope"] * 10) == [0.0] * 10
    digits = load_task(TaskConfig(digits=(3, 3), ops=["*"], n_train=5, n_test=5)).train
    assert all("*" in r["prompt"] and len(r["prompt"].split("*")[0]) == 3 for r in digits)


def test_load_task_reviews():
    task = load_task(TaskConfig(name="reviews", n_train=30, n_test=10))
    assert len(task.train) == 30 and len(task.test) == 10
    assert all(isinstance(r["prompt"], str) and r["prompt"] for r in task.train)
    good = "the motor is great. i love the jar."
    scores = task.score(task.test[:3], [good, good, good])
    assert len(scores) == 3 and all(isinstance(s, float) for s in scores)


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_load_task_dataset_from_jsonl(tmp_path):
    rows = [{"prompt": f"{i}+1=", "completion": str(i + 1), "answer": str(i + 1)} for i in range(10)]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    task = load_task(TaskConfig(name="dataset", path=path, n_test=3, reward="exact_match"), kind="sft")
    assert [r["prompt"] for r in task.train] == [f"{i}+1=" for i in range(7)]  # the last n_test rows are held out
    assert [r["completion"] for r in task.test] == ["8", "9", "10"]
    assert task.score(task.test, ["8", "0", "10"]) == [1.0, 0.0, 1.0]
    # at most half the rows go to the test split; no reward configured → None
    small = load_task(TaskConfig(name="dataset", path=path, n_test=200), kind="sft")
    assert len(small.train) == len(small.test) == 5 and small.reward_fn is None


def test_load_task_dataset_with_test_file_and_plugin_reward(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"prompt": "hi"}, {"prompt": "hello"}])
    test = write_jsonl(tmp_path / "test.jsonl", [{"prompt": "hey"}])
    plugin = tmp_path / "my_rewards.py"
    plugin.write_text("def length(prompts, completions, **_):\n    return [float(len(c)) for c in completions]\n")
    task = load_task(TaskConfig(name="dataset", path=train, test_path=test, reward=f"{plugin}:length"))
    assert [r["prompt"] for r in task.train] == ["hi", "hello"] and [r["prompt"] for r in task.test] == ["hey"]
    assert task.score(task.test, ["abcd"]) == [4.0]


def test_dataset_task_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"task\.path"):
        load_config(TaskConfig, None, ["name=dataset"])
    with pytest.raises(ConfigError, match=r"'arithmetic', 'reviews', 'code', .*'dataset'"):  # lists the built-ins
        load_config(TaskConfig, None, ["name=poetry"])
    one = write_jsonl(tmp_path / "one.jsonl", [{"prompt": "a", "completion": "b"}])
    with pytest.raises(ValueError, match="at least 2 rows"):
        load_task(TaskConfig(name="dataset", path=one), kind="sft")
