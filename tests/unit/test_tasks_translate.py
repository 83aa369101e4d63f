"""The `translate` task: the target language's three rules, checked against an independent translator."""

from __future__ import annotations

import pytest

from rewardloop.config import load_config
from rewardloop.envs.tasks import TaskConfig, load_task
from rewardloop.envs.translate import ADJECTIVES, LEXICON, NOUNS, VERBS, make_translate_splits, translate


def reference(source: str) -> str:
    """Parse 'the [adj] noun verbs the [adj] noun' and apply lexicon, SOV + noun–adjective order, object suffix."""
    words = source.split()
    verb_at = next(i for i, w in enumerate(words) if w.endswith("s") and w[:-1] in VERBS)
    subject, verb, obj = words[1:verb_at], words[verb_at][:-1], words[verb_at + 2 :]

    def np(ws: list[str], suffix: str = "") -> list[str]:
        return [LEXICON[ws[-1]] + suffix] + [LEXICON[w] for w in ws[:-1]]

    return " ".join(np(subject) + np(obj, "s") + [LEXICON[verb]])


def test_translate_by_hand():
    assert translate(("cheap", "kettle"), "love", ("great", "lamp")) == "val occ wors non ran"
    assert translate((None, "mug"), "use", (None, "watch")) == "dic targs dig"


def test_translate_splits_are_deterministic_disjoint_and_follow_the_rules(tokenizer):
    train, test = make_translate_splits(seed=5, n_train=500, n_test=50)
    assert (train, test) == make_translate_splits(seed=5, n_train=500, n_test=50)
    assert not {e.prompt for e in train} & {e.prompt for e in test}
    for e in train + test:
        source = e.prompt.removeprefix("translate: ").removesuffix(" =>")
        assert e.answer == reference(source)
        assert e.columns["completion"] == " " + e.answer
        # one token per target word, plus one for the object's suffix
        n = len(e.answer.split()) + 1
        assert len(tokenizer(e.columns["completion"], add_special_tokens=False)["input_ids"]) == n
    with_adj = sum(len(e.answer.split()) > 3 for e in train)
    assert 0.5 < with_adj / len(train) < 0.9  # P(at least one adjective) = 1 − 0.5² = 0.75


def test_translate_vocabularies_are_distinct():
    targets = list(LEXICON.values())
    assert len(set(targets)) == len(targets) == len(NOUNS) + len(ADJECTIVES) + len(VERBS)
    assert not set(targets) & set(LEXICON)  # no target word is a source word


def test_translate_config_and_errors():
    train, _ = make_translate_splits(n_train=100, n_test=10, adjective_rate=0.0)
    assert all(len(e.answer.split()) == 3 for e in train)
    with pytest.raises(ValueError, match="adjective_rate"):
        make_translate_splits(adjective_rate=1.5)
    with pytest.raises(ValueError, match="distinct sentences"):
        make_translate_splits(n_train=14 * 14 * 5, n_test=1, adjective_rate=0.0)  # only 980 exist
    task = load_task(load_config(TaskConfig, None, ["name=translate", "n_train=20", "n_test=4"]), kind="sft")
    row = task.test[0]
    assert task.score([row], [" " + row["answer"]]) == [pytest.approx(1.0)]
    words = row["answer"].split()
    no_suffix = " ".join([words[0], words[1].removesuffix("s") if words[1].endswith("s") else words[1], *words[2:]])
    wrong_verb = " ".join([*words[:-1], "xyz"])
    s_ok, s_suffix, s_verb = task.score([row] * 3, [row["answer"], no_suffix, wrong_verb])
    assert s_ok == pytest.approx(1.0) and 0.5 < s_suffix < 1.0 and 0.0 < s_verb < 1.0
