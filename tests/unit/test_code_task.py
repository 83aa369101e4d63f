"""The `code` task: every reference solution passes its own tests in the sandbox; wrong bodies do not; splits."""

from __future__ import annotations

import pytest

from rewardloop.envs.code import CodeEnv, code_problems, make_code_splits
from rewardloop.rewards.code_tests import code_tests_reward
from rewardloop.rewards.sandbox import SandboxLimits

LIMITS = SandboxLimits(cpu_seconds=2, wall_seconds=10)  # generous wall time: this runs ~80 programs on 2 cores


def _score(problems: list[dict], bodies: list[str]) -> list[float]:
    return code_tests_reward(
        [p["prompt"] for p in problems],
        bodies,
        tests=[p["tests"] for p in problems],
        entry_point=[p["entry_point"] for p in problems],
        limits=LIMITS,
    )


def test_problem_set_is_well_formed():
    problems = code_problems()
    assert len(problems) >= 30
    names = [p["name"] for p in problems]
    assert len(set(names)) == len(names)
    for p in problems:
        assert p["prompt"].startswith(f"def {p['name']}(") and p["entry_point"] == p["name"]
        assert 3 <= len(p["tests"]) <= 5 and all(t.startswith("assert ") for t in p["tests"])
        assert p["reference"].startswith("    ")  # a body that continues the prompt


def test_reference_solutions_pass_and_wrong_bodies_fail():
    problems = code_problems()
    rewards = _score(problems + problems, [p["reference"] for p in problems] + ["    return None\n"] * len(problems))
    reference, wrong = rewards[: len(problems)], rewards[len(problems) :]
    assert dict(zip([p["name"] for p in problems], reference, strict=True)) == {p["name"]: 1.0 for p in problems}
    failing = [p["name"] for p, r in zip(problems, wrong, strict=True) if not r < 1.0]
    assert failing == []  # every problem has a test that `return None` fails


def test_splits_are_deterministic_disjoint_and_complete():
    train, test = make_code_splits(seed=3)
    assert (train, test) == make_code_splits(seed=3)
    assert make_code_splits(seed=4) != (train, test)
    train_prompts, test_prompts = {r["prompt"] for r in train}, {r["prompt"] for r in test}
    assert not train_prompts & test_prompts
    assert len(train_prompts | test_prompts) == len(code_problems())
    assert len(test) == round(len(code_problems()) * 0.25)
    assert set(train[0]) == {"prompt", "completion", "tests", "entry_point"}
    with pytest.raises(ValueError, match="test_fraction"):
        make_code_splits(test_fraction=1.0)


def test_code_env_scores_one_step():
    train, _ = make_code_splits(seed=0)
    env = CodeEnv(train[:1], seed=0)
    assert env.reset() == train[0]["prompt"]
    _, reward, done, _ = env.step(train[0]["completion"])
    assert reward == 1.0 and done
    env.reset()
    assert env.step("    return None\n")[1] < 1.0
