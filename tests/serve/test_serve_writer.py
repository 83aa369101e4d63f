"""Group commit: concurrent requests' interactions share transactions, each request learns its own outcome, and a
bad one fails alone."""

from __future__ import annotations

from concurrent.futures import wait

import pytest

from rewardloop.serve.writer import GroupCommitWriter
from rewardloop.store import Store


def row(i: int, **extra) -> dict:
    return {"id": f"resp-{i}", "model_version": "v", "prompt": f"p{i}", "completion": "c", **extra}


def test_queued_requests_share_a_commit_and_a_bad_one_fails_alone(tmp_path):
    with Store.open(f"sqlite:///{tmp_path / 's.db'}") as store:
        writer = GroupCommitWriter(store)
        futures = [writer.submit([row(i)]) for i in range(50)]  # queued before the thread runs: one batch
        writer.start()
        wait(futures, timeout=60)
        assert [f.result() for f in futures] == [[f"resp-{i}"] for i in range(50)]
        assert writer.commits == 1  # 50 requests, one durable commit
        bad = writer.submit([row(99, propensity=2.0)])
        more = [writer.submit([row(i), row(i + 1000)]) for i in range(50, 60)]
        wait([bad, *more], timeout=60)
        writer.stop()
        with pytest.raises(Store.StoreError, match="propensity"):
            bad.result()
        assert all(len(f.result()) == 2 for f in more)  # a batch with the bad request fell back to one by one
        assert store.get_interaction("resp-99") is None and store.get_interaction("resp-1055")["prompt"] == "p1055"
