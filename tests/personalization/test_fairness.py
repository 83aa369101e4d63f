"""The reward-model fairness report: matched pairs differ only in the attribute, the paired gap by hand, a biased
scorer is caught and a neutral one is not, and a reward model scores feed texts through it."""

from __future__ import annotations

import copy
import math

import pytest

from rewardloop.eval.fairness import (
    FEED_ATTRIBUTES,
    fairness_report,
    matched_pairs,
    paired_gap,
    score_disparity,
    swap,
)
from rewardloop.personalize import feed_texts


def test_swap_and_matched_pairs():
    text = "User: Ana (niche viewer) enjoys chess"
    assert swap(text, "(mainstream viewer)", "(niche viewer)") == (
        "User: Ana (mainstream viewer) enjoys chess",
        "User: Ana (niche viewer) enjoys chess",
    )
    pa, ra, pb, rb = matched_pairs([text, "no group here"], ["[i1] x, by creator p5", "[i2] y"], "by creator p0", "by creator p5")  # fmt: skip
    assert (pa, ra, pb, rb) == ([text], ["[i1] x, by creator p0"], [text], ["[i1] x, by creator p5"])


def test_paired_gap_by_hand():
    gap, lo, hi = paired_gap([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    half = 1.959964 * 1.0 / math.sqrt(3)  # sd of [1, 2, 3] is 1
    assert (gap, lo, hi) == pytest.approx((2.0, 2.0 - half, 2.0 + half), abs=1e-5)


def test_a_biased_scorer_is_caught_and_a_neutral_one_is_not():
    prompts, responses = feed_texts(30, seed=0)

    def biased(prompts, completions, **_):
        return [1.0 * ("mainstream" in p) + 0.1 * len(c) for p, c in zip(prompts, completions, strict=True)]

    def neutral(prompts, completions, **_):
        return [float(c.count("chess")) for c in completions]

    d = score_disparity(biased, prompts, responses, "user_group", FEED_ATTRIBUTES["user_group"])
    assert d.gap == pytest.approx(1.0) and d.significant() and d.share_a_higher == 1.0 and d.n == len(prompts)
    report = {r["attribute"]: r for r in fairness_report(neutral, prompts, responses)}
    assert report["user_group"]["gap"] == 0.0 and report["provider"]["gap"] == 0.0
    assert 0 < report["provider"]["n"] < len(prompts)  # only items by p0 or p5 form provider pairs
    with pytest.raises(ValueError, match="no prompt or response mentions 'zzz'"):
        score_disparity(neutral, prompts, responses, "x", ("zzz", "yyy"))


def test_a_reward_model_through_the_report(tiny_llama, tokenizer):
    from rewardloop.models.value_head import ValueModel
    from rewardloop.rewards.model import RewardModelScorer

    scorer = RewardModelScorer([], members=[(ValueModel(copy.deepcopy(tiny_llama), kind="reward"), tokenizer)])
    prompts, responses = feed_texts(3, seed=1)
    report = fairness_report(scorer, prompts, responses)
    assert [r["attribute"] for r in report] == list(FEED_ATTRIBUTES)
    assert all(r["n"] > 0 and r["lo"] <= r["gap"] <= r["hi"] for r in report)


def test_the_command_prints_the_report_for_a_saved_reward_model(tmp_path, capsys, tiny_llama, tokenizer):
    from rewardloop.cli import main
    from rewardloop.models.value_head import ValueModel

    rm = ValueModel(copy.deepcopy(tiny_llama), kind="reward")
    rm.save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    args = ["personalize", "policies=[random]", "steps=3", "seeds=1", f"fairness_model={tmp_path / 'rm'}"]
    assert main([*args, "fairness_steps=2", f"out={tmp_path / 'out'}"]) == 0
    printed = capsys.readouterr().out
    assert "| user_group | (mainstream viewer) | (niche viewer) |" in printed and "| provider |" in printed
