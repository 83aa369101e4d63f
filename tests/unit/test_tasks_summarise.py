"""The `summarise` task: documents with one verdict among distractors, ROUGE-L / chrF / BLEU rewards."""

from __future__ import annotations

import re

import pytest

from rewardloop.config import load_config
from rewardloop.envs.summarise import make_summarise_splits
from rewardloop.envs.tasks import TaskConfig, load_task
from rewardloop.rewards.registry import resolve_reward
from rewardloop.rewards.text_metrics import bleu, chrf, rouge_l


def test_summarise_splits_are_deterministic_disjoint_and_correct(tokenizer):
    train, test = make_summarise_splits(seed=1, n_train=300, n_test=50)
    assert (train, test) == make_summarise_splits(seed=1, n_train=300, n_test=50)
    assert not {e.prompt for e in train} & {e.prompt for e in test}
    for e in train + test:
        sentences = e.prompt.removeprefix("summarise: ").removesuffix(" . summary:").split(" . ")
        assert 3 <= len(sentences) <= 5
        verdicts = [s for s in sentences if s.startswith("overall ")]
        assert len(verdicts) == 1  # exactly one key fact; the summary restates it without "overall"
        assert e.answer == verdicts[0].removeprefix("overall ")
        assert e.columns["completion"] == " " + e.answer
        adjective = e.answer.split()[-1]
        assert sum(re.findall(r"\w+", s)[-1] == adjective for s in sentences if s.split()[-1] != "too") == 1
    assert {e.prompt.index("overall") > 11 for e in train} == {True, False}  # the verdict moves around
    assert max(len(tokenizer(e.prompt + e.columns["completion"])["input_ids"]) for e in train) <= 60


def test_summarise_errors():
    with pytest.raises(ValueError, match="n_sentences"):
        make_summarise_splits(n_sentences=(0, 3))
    with pytest.raises(ValueError, match="distinct documents"):
        make_summarise_splits(n_train=400, n_test=10, n_sentences=(1, 1))  # 14 products × 22 verdicts = 308


def test_load_task_summarise_scores_with_rouge_l():
    task = load_task(load_config(TaskConfig, None, ["name=summarise", "n_train=20", "n_test=4"]), kind="sft")
    row = task.test[0]
    p = row["answer"].split()[1]
    assert task.score([row], [" " + row["answer"]]) == [1.0]
    assert task.score([row], [f"the {p} is nice"]) == [pytest.approx(0.75)]  # LCS 3 of 4 words each side
    assert task.score([row], [""]) == [0.0]


def test_text_metrics_by_hand():
    answer = ["the kettle is great"] * 3
    outs = ["the kettle is great", "the kettle is", "nothing here"]
    assert rouge_l(None, outs, answer=answer) == [1.0, pytest.approx(2 * 1.0 * 0.75 / 1.75), 0.0]
    c = chrf(None, outs, answer=answer)
    b = bleu(None, outs, answer=answer)
    assert c[0] == pytest.approx(1.0) and b[0] == 1.0
    assert 0 < c[2] < c[1] < 1 and 0 <= b[2] < b[1] < 1
    assert [resolve_reward(n) for n in ("rouge_l", "chrf", "bleu")] == [rouge_l, chrf, bleu]
