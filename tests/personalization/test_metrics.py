"""Metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from rewardloop.eval.metrics import (
    catalogue_coverage,
    ctr,
    dcg,
    gini,
    group_disparity,
    intra_list_diversity,
    mean_watch_time,
    ndcg_at_k,
    normalised_regret,
    provider_exposure,
    session_lengths,
)


def test_normalised_regret_is_zero_for_the_oracle_and_one_for_random():
    assert normalised_regret(3.0, oracle=3.0, random=1.0) == 0.0
    assert normalised_regret(1.0, oracle=3.0, random=1.0) == 1.0
    assert normalised_regret(2.5, oracle=3.0, random=1.0) == 0.25
    with pytest.raises(ValueError, match=r"oracle=1\.0, random=1\.0"):
        normalised_regret(1.0, oracle=1.0, random=1.0)


def test_engagement_metrics():
    assert ctr(["i1", None, "i2", None]) == 0.5
    events = [[{"type": "click"}, {"type": "watch_time", "value": 30.0}], [], [{"type": "watch_time", "value": 60.0}]]
    assert mean_watch_time(events) == 30.0
    assert session_lengths([False, False, True, True, False]) == [3, 1]


def test_ranking_and_diversity():
    assert dcg([3, 2]) == pytest.approx(7 + 3 / np.log2(3))
    assert ndcg_at_k([3, 2, 0], [0, 2, 3, 0], k=3) == pytest.approx(1.0)
    assert ndcg_at_k([3, 2, 0], [0, 2, 3, 1], k=3) == pytest.approx(dcg([3, 2]) / dcg([3, 2, 1]))
    assert ndcg_at_k([0, 3], [3, 0], k=2) == pytest.approx((7 / np.log2(3)) / 7)
    assert ndcg_at_k([0, 0], [0, 0], k=2) == 0.0
    assert intra_list_diversity(np.array([[1.0, 0.0], [0.0, 1.0]])) == pytest.approx(1.0)
    assert intra_list_diversity(np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])) == pytest.approx(2 / 3)
    assert catalogue_coverage([[0, 1], [1, 2]], n_items=6) == 0.5
    with pytest.raises(ValueError, match="item index 9"):
        catalogue_coverage([[9]], n_items=6)


def test_exposure_gini_and_group_disparity():
    assert gini([1.0, 1.0, 1.0]) == 0.0
    assert gini([0.0, 0.0, 3.0]) == pytest.approx(2 / 3)
    assert gini([1.0, 3.0]) == pytest.approx(0.25)  # (−1·1 + 1·3) / (2·4)
    exposure = provider_exposure(
        [[0, 1], [1, 2]], providers=np.array([0, 0, 1]), n_providers=3, examination=np.array([1.0, 0.5])
    )
    assert exposure.tolist() == [1.0 + 0.5 + 1.0, 0.5, 0.0]
    report = group_disparity([1.0, 3.0, 2.0, 2.0], ["a", "a", "b", "b"])
    assert report == {"means": {"a": 2.0, "b": 2.0}, "gap": 0.0, "ratio": 1.0}
    report = group_disparity([1.0, 1.0, 3.0], ["a", "a", "b"])
    assert report["gap"] == 2.0 and report["ratio"] == pytest.approx(1 / 3)
