"""Reward library: built-ins, registry/plug-ins, composite weights, engagement mapping, and safe scoring
(raise / NaN / hang per sample → skip / zero / abort, reported with the sample)."""

from __future__ import annotations

import math
import threading
import time

import pytest

from rewardloop.rewards import (
    BUILTIN_REWARDS,
    EngagementWeights,
    RewardError,
    RewardSpec,
    build_rewards,
    engagement_reward,
    engagement_score,
    exact_answer,
    length_penalty,
    numeric_closeness,
    numeric_match,
    regex_format,
    repetition_penalty,
    resolve_reward,
    score_completions,
    weighted_sum,
    with_timeout,
)
from rewardloop.rewards.scoring import RewardTimeout


def test_exact_and_numeric_answer_match():
    assert exact_answer(["q"] * 3, [" 85 ", "85.", "Yes"], answer=["85", "85", "yes"]) == [1.0, 0.0, 0.0]
    assert exact_answer(["q"], ["Yes"], answer=["yes"], ignore_case=True) == [1.0]
    got = numeric_match(
        ["q"] * 5, ["The answer is 85.", "85.0", "8 then 1,000", "none", "-3"], answer=[85, "85", 1000, 1, -3]
    )
    assert got == [1.0, 1.0, 1.0, 0.0, 1.0]
    # partial credit 1 − |x − a| / scale: 85 → 1, 83 → 0.6, 95 → 0, no number → 0
    assert numeric_closeness(["q"] * 4, ["85", "83", "95", "x"], answer=[85] * 4, scale=5) == [1.0, 0.6, 0.0, 0.0]


def test_regex_format_length_and_repetition():
    assert regex_format(["q"] * 3, ["42", " -7 ", "42 apples"]) == [1.0, 1.0, 0.0]
    assert regex_format(["q"], ["<a>x</a> tail"], pattern=r"<a>.*</a>", search=True) == [1.0]
    # 0 up to 10 chars; −(15 − 10)/10 = −0.5; capped at −1
    assert length_penalty(["q"] * 3, ["a" * 10, "a" * 15, "a" * 40], max_chars=10) == [0.0, -0.5, -1.0]
    # "a b a b a b": 4 trigrams of which 2 distinct → −0.5; short text → 0
    assert repetition_penalty(["q"] * 2, ["a b a b a b", "a b"], n=3) == [-0.5, 0.0]


def test_registry_resolves_every_builtin_name():
    for name in ("exact_match", "exact_answer", "numeric_match", "regex_format", "length_penalty", "engagement"):
        assert callable(resolve_reward(name))
    assert resolve_reward("rewardloop.rewards.builtin:numeric_match") is numeric_match
    assert "reward_model" in BUILTIN_REWARDS
    with pytest.raises(ValueError, match="unknown reward"):
        resolve_reward("no_such_reward")


def test_plugin_from_file_path(tmp_path):
    f = tmp_path / "myrew.py"
    f.write_text("def shout(prompts, completions, **_):\n    return [float(c.isupper()) for c in completions]\n")
    fn = resolve_reward(f"{f}:shout")
    assert fn(["p", "p"], ["HI", "hi"]) == [1.0, 0.0]
    with pytest.raises(ValueError, match="not found"):
        resolve_reward(f"{f}:missing")


def test_build_rewards_weights_kwargs_and_components():
    specs = [RewardSpec(fn="regex_format", weight=0.5, kwargs={"pattern": r"\d+"}), RewardSpec(fn="length_penalty")]
    rewards = build_rewards(specs, exact_answer, task_weight=2.0)
    assert list(rewards.fns) == ["task", "regex_format", "length_penalty"]
    assert rewards.weights == {"task": 2.0, "regex_format": 0.5, "length_penalty": 1.0}
    scored = rewards.score(["q", "q"], ["12", "abc"], {"answer": ["12", "x"]})
    assert scored.components["regex_format"] == [1.0, 0.0]
    assert scored.rewards == [2.0 + 0.5, 0.0]
    with pytest.raises(ValueError, match="used twice"):
        build_rewards([RewardSpec(fn="length_penalty"), RewardSpec(fn="length_penalty")], None)
    with pytest.raises(ValueError, match="no reward"):
        build_rewards([], None)


def test_weighted_sum_keeps_components():
    fn = weighted_sum({"a": (lambda p, c, **_: [1.0] * len(c), 2.0), "b": (lambda p, c, **_: [3.0] * len(c), -1.0)})
    assert fn(["p"], ["c"]) == [-1.0]
    assert fn.last_components == {"a": [1.0], "b": [3.0]}


def test_engagement_mapping():
    w = EngagementWeights(click=1, like=2, share=3, skip=-1, watch_time=1, watch_time_scale=60, clip=None)
    events = [{"type": "click"}, "like", {"type": "watch_time", "value": 90}]
    assert engagement_score(events, w) == pytest.approx(1 + 2 + 1.5)
    assert engagement_score({"skip": 2, "share": 1}, w) == pytest.approx(1.0)
    assert engagement_score(["share"] * 10, EngagementWeights(clip=(-5, 5))) == 5.0
    assert engagement_reward(["p"] * 2, ["a", "b"], events=[["click"], []], weights={"click": 0.5}) == [0.5, 0.0]
    with pytest.raises(ValueError, match="unknown engagement event type 'clik'"):
        engagement_score(["clik"])


# -- safe scoring ---------------------------------------------------------------------------------------------


def flaky(prompts, completions, **_):
    """Raises on 'boom', NaN on 'nan', hangs on 'hang', else 1.0."""
    out = []
    for c in completions:
        if c == "boom":
            raise RuntimeError("kaboom")
        if c == "hang":
            time.sleep(30)
        out.append(float("nan") if c == "nan" else 1.0)
    return out


COMPLETIONS = ["ok", "boom", "nan", "hang", "ok"]


def test_skip_marks_failed_samples_invalid_and_reports_them(caplog):
    scored = score_completions({"r": flaky}, ["p"] * 5, COMPLETIONS, on_error="skip", timeout=0.5)
    assert scored.valid == [True, False, False, False, True]
    assert scored.rewards == [1.0, 0.0, 0.0, 0.0, 1.0]
    errs = {e["completion"]: e["error"] for e in scored.errors}
    assert "kaboom" in errs["boom"] and "NaN" in errs["nan"] and "timed out" in errs["hang"]
    assert {e["index"] for e in scored.errors} == {1, 2, 3}
    assert "failed on sample 1" in caplog.text


def test_zero_keeps_samples_with_reward_zero():
    scored = score_completions({"r": flaky}, ["p"] * 5, COMPLETIONS, on_error="zero", timeout=0.5)
    assert scored.valid == [True] * 5
    assert scored.rewards == [1.0, 0.0, 0.0, 0.0, 1.0]
    assert len(scored.errors) == 3


@pytest.mark.parametrize("bad, message", [("boom", "kaboom"), ("nan", "NaN"), ("hang", "timed out")])
def test_abort_raises_naming_the_sample(bad, message):
    with pytest.raises(RewardError, match=message) as info:
        score_completions({"r": flaky}, ["the prompt"] * 2, ["ok", bad], on_error="abort", timeout=0.5)
    assert "sample 1" in str(info.value) and repr(bad) in str(info.value)


def test_hang_is_bounded_by_the_timeout():
    start = time.perf_counter()
    scored = score_completions({"r": flaky}, ["p"] * 2, ["hang", "ok"], on_error="skip", timeout=0.3)
    # batch call times out (0.3 s) then per-sample calls: the hanging one times out once more
    assert time.perf_counter() - start < 3.0
    assert scored.valid == [False, True]


def test_with_timeout_passes_results_and_errors_through():
    assert with_timeout(lambda p, c: [2.0], 1.0)(["p"], ["c"]) == [2.0]
    with pytest.raises(KeyError):
        with_timeout(lambda p, c: {}["x"], 1.0)(["p"], ["c"])
    with pytest.raises(RewardTimeout):
        with_timeout(lambda p, c: threading.Event().wait(5), 0.1)(["p"], ["c"])
    assert math.isfinite(with_timeout(lambda p, c: [0.0], None)(["p"], ["c"])[0])


@pytest.mark.parametrize(
    "name, kwargs",
    [("exact_answer", {}), ("exact_match", {}), ("numeric_match", {}), ("numeric_closeness", {}),
     ("regex_format", {"pattern": r"\d+"}), ("length_penalty", {}), ("repetition_penalty", {})],
)  # fmt: skip
def test_builtins_take_conversational_completions_as_trl_passes_them(name, kwargs):
    fn = resolve_reward(name)
    texts = ["12", "the answer is 7 7 7 7", "x"]
    messages = [[{"role": "assistant", "content": t}] for t in texts]
    prompts = [[{"role": "user", "content": "q"}]] * 3
    cols = {"answer": ["12", "7", "3"]}
    assert fn(prompts=prompts, completions=messages, **cols, **kwargs) == fn(
        prompts=["q"] * 3, completions=texts, **cols, **kwargs
    )


def test_inline_scorers_run_in_the_callers_thread():
    seen = []

    def scorer(prompts, completions, **_):
        seen.append(threading.current_thread())
        return [1.0] * len(completions)

    score_completions({"plain": scorer}, ["p"], ["c"], timeout=5.0)
    scorer.inline = True
    score_completions({"inline": scorer}, ["p"], ["c"], timeout=5.0)
    assert seen[0] is not threading.current_thread() and seen[1] is threading.current_thread()
