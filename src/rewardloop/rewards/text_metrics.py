"""Text-overlap rewards for generation tasks: ROUGE-L (summaries), chrF and sentence BLEU (translations).

Each is a plain RewardFn against the ``answer`` column, in [0, 1], 1.0 for an exact match, so that ``accuracy``
(reward ≥ 1) counts exact outputs. The metric libraries (``rouge-score``, ``sacrebleu``: the ``[tasks]`` extra) are
imported on first use.
"""

from __future__ import annotations

import functools
from typing import Any

from rewardloop.rewards.builtin import on_text


@functools.cache
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"])


@on_text
def rouge_l(prompts: list[Any], completions: list[str], *, answer: list[Any], **_: Any) -> list[float]:
    """ROUGE-L F1 (longest common subsequence of words; Lin 2004, the ``rouge-score`` package) against ``answer``."""
    scorer = _rouge_scorer()
    return [float(scorer.score(str(a), c)["rougeL"].fmeasure) for c, a in zip(completions, answer, strict=True)]


@on_text
def chrf(prompts: list[Any], completions: list[str], *, answer: list[Any], **_: Any) -> list[float]:
    """Sentence chrF (character n-gram F-score, β = 2; Popović 2015, ``sacrebleu``) against ``answer``, in [0, 1]."""
    from sacrebleu.metrics import CHRF

    metric = CHRF()
    return [
        min(1.0, metric.sentence_score(c.strip(), [str(a)]).score / 100)
        for c, a in zip(completions, answer, strict=True)
    ]


@on_text
def bleu(prompts: list[Any], completions: list[str], *, answer: list[Any], **_: Any) -> list[float]:
    """Sentence BLEU (up to 4-grams, exponential smoothing; Papineni et al. 2002, ``sacrebleu``), in [0, 1]."""
    from sacrebleu.metrics import BLEU

    metric = BLEU(effective_order=True)
    return [
        min(1.0, metric.sentence_score(c.strip(), [str(a)]).score / 100)
        for c, a in zip(completions, answer, strict=True)
    ]
