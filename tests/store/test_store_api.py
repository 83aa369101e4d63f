"""The Store API on every backend: round-trips, validation messages, idempotency (also under concurrent retries),
all-or-nothing batches, the model registry, and the migrations matching the models."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from rewardloop.rewards import EngagementWeights, engagement_score
from rewardloop.store import Feedback, FeedbackError, Store, StoreError

CHAT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}]


def _count(store: Store) -> int:
    with store.engine.connect() as c:
        return c.scalar(select(func.count()).select_from(Feedback))


def test_migrations_create_exactly_the_models(store):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from rewardloop.store.models import Base

    with store.engine.connect() as c:
        ctx = MigrationContext.configure(c, opts={"version_table": "rewardloop_alembic_version"})
        assert compare_metadata(ctx, Base.metadata) == []
        assert ctx.get_current_revision() == "0003"


def test_open_twice_keeps_data(store_url):
    with Store.open(store_url) as s:
        rid = s.log_interaction(model_version="m@1", prompt="p", completion="c")
    with Store.open(store_url) as s:  # upgrade head on an up-to-date database changes nothing
        assert s.get_interaction(rid)["completion"] == "c"


def test_interaction_round_trip(store):
    full = dict(
        id="resp-abc",
        model_version="tiny@2",
        messages=CHAT,
        prompt="system: be brief\nuser: 2+2?\n",
        completion="4",
        sampling={"temperature": 0.7, "top_p": 0.9, "n": 2, "stop": ["\n"]},
        token_logprobs=[{"token": "4", "logprob": -0.25}],
        latency_ms=12.5,
        user_id="u1",
        session_id="s1",
        candidate_index=1,
        n_candidates=2,
        propensity=0.5,
    )
    assert store.log_interaction(**full) == "resp-abc"
    got = store.get_interaction("resp-abc")
    assert {k: got[k] for k in full} == full
    assert got["kind"] == "chat" and got["created_at"].endswith("+00:00")
    rid = store.log_interaction(model_version="tiny@2", prompt="1+1=", completion="2")
    assert rid.startswith("resp-") and rid != "resp-abc"
    got = store.get_interaction(rid)
    assert (got["kind"], got["prompt"], got["messages"], got["propensity"]) == ("completion", "1+1=", None, None)
    assert store.get_interaction("resp-missing") is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"prompt": "p", "completion": "c", "temprature": 1}, "temprature: unknown interaction field"),
        ({"kind": "chat", "prompt": "p", "completion": "c"}, "messages: a chat interaction needs"),
        ({"kind": "edit", "prompt": "p", "completion": "c"}, "kind: 'edit' is not one of"),
        ({"prompt": "p", "completion": None}, "completion: expected a string, got None"),
        (
            {"prompt": "p", "completion": "c", "propensity": 1.5},
            "propensity: expected a probability in (0, 1], got 1.5",
        ),
        ({"prompt": "p", "completion": "c", "candidate_index": 2, "n_candidates": 2}, "candidate_index: expected"),
        ({"prompt": "p", "completion": "c", "user_id": "u" * 201}, "user_id: expected a string of at most 200"),
        ({"id": "r" * 65, "prompt": "p", "completion": "c"}, "id: expected a string of at most 64 characters"),
    ],
)
def test_interaction_validation_names_the_field(store, fields, message):
    with pytest.raises(StoreError) as e:
        store.log_interaction(**fields)
    assert message in str(e.value)


def test_duplicate_response_id_is_an_error(store):
    store.log_interaction(id="resp-1", prompt="p", completion="c")
    with pytest.raises(StoreError, match="id: response id 'resp-1' is already stored"):
        store.log_interaction(id="resp-1", prompt="p", completion="other")
    assert store.get_interaction("resp-1")["completion"] == "c"


def test_every_feedback_kind_round_trips(store):
    a = store.log_interaction(prompt="p", completion="a", user_id="u1")
    b = store.log_interaction(prompt="p", completion="b")
    items = [
        dict(kind="thumbs", value=-1),
        dict(kind="rating", value=4.5),
        dict(kind="pairwise", value=0.5, other_response_id=b),
        dict(kind="comment", comment="too long"),
        dict(kind="engagement", event="watch_time", value=42.0),
        dict(kind="engagement", event="listen_through"),  # discrete: value defaults to 1
    ]
    ids = [
        store.add_feedback(response_id=a, idempotency_key=f"k{i}", user_id="ann", **it)[0] for i, it in enumerate(items)
    ]
    rows = store.feedback_since(0)
    assert [r["id"] for r in rows] == ids == sorted(ids)
    for it, row in zip(items, rows, strict=True):
        assert {k: row[k] for k in it} == it
        assert row["response_id"] == a and row["user_id"] == "ann"
    assert rows[-1]["value"] == 1.0
    assert [r["id"] for r in store.feedback_since(ids[3])] == ids[4:]
    assert [r["id"] for r in store.feedback_since(0, limit=2)] == ids[:2]


def test_engagement_events_are_the_reward_vocabulary(store):
    rid = store.log_interaction(prompt="p", completion="c")
    for i, ev in enumerate(EngagementWeights.events()):
        assert store.add_feedback(response_id=rid, kind="engagement", event=ev, value=2, idempotency_key=str(i))[1]
    stored = [(r["event"], r["value"]) for r in store.feedback_since(0)]
    assert {e for e, _ in stored} >= {"click", "like", "share", "comment", "skip", "dislike", "report"}
    assert {"watch_time", "dwell", "listen_through"} <= {e for e, _ in stored}
    # what the store holds is scorable by the engagement reward (rewards stay computable from logs)
    w = EngagementWeights(clip=None)
    assert engagement_score([{"type": e, "value": v} for e, v in stored if e == "dwell"], w) == pytest.approx(
        w.dwell * 2 / w.dwell_scale
    )


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (dict(response_id="resp-nope", kind="thumbs", value=1), "response_id: unknown response id 'resp-nope'"),
        (dict(kind="like", value=1), "kind: unknown feedback kind 'like'"),
        (dict(kind="thumbs", value=0), "value: thumbs must be 1 (up) or -1 (down), got 0"),
        (dict(kind="thumbs"), "value: required for kind='thumbs'"),
        (dict(kind="rating", value=6), "value: rating must be in 1–5, got 6"),
        (dict(kind="rating", value=float("nan")), "value: expected a finite number, got nan"),
        (dict(kind="rating", value="5"), "value: expected a finite number, got '5'"),
        (dict(kind="pairwise", value=1), "other_response_id: pairwise feedback needs the compared response id"),
        (dict(kind="pairwise", value=0.3, other_response_id="X"), "value: pairwise must be one of"),
        (dict(kind="pairwise", value=1, other_response_id="resp-nope"), "other_response_id: unknown response id"),
        (dict(kind="engagement", event="clik"), "event: unknown engagement event 'clik'"),
        (dict(kind="engagement", event="watch_time", value=-3), "value: engagement amount must be ≥ 0, got -3"),
        (dict(kind="thumbs", value=1, event="click"), "event: only engagement feedback has an event"),
        (dict(kind="comment", comment="  "), "comment: kind='comment' needs a non-empty comment"),
        (dict(kind="thumbs", value=1, idempotency_key=""), "idempotency_key: expected a non-empty string"),
        (dict(kind="thumbs", value=1, user_id="a" * 201), "user_id: expected a string of at most 200 characters"),
    ],
)
def test_feedback_validation_names_field_and_value(store, item, message):
    rid = store.log_interaction(prompt="p", completion="c")
    other = store.log_interaction(prompt="p", completion="d")
    item = {"response_id": rid, "idempotency_key": "k", **item}
    if item.get("other_response_id") == "X":
        item["other_response_id"] = other
    with pytest.raises(FeedbackError) as e:
        store.add_feedback(**item)
    assert message in str(e.value)
    assert isinstance(e.value, ValueError) and store.FeedbackError is FeedbackError
    assert _count(store) == 0


def test_retried_post_is_stored_once(store):
    rid = store.log_interaction(prompt="p", completion="c")
    first = store.add_feedback(response_id=rid, kind="rating", value=5, idempotency_key="retry-1")
    again = store.add_feedback(response_id=rid, kind="rating", value=5, idempotency_key="retry-1")
    assert first == (first[0], True) and again == (first[0], False)
    assert _count(store) == 1


def test_concurrent_retries_store_one_row(store):
    rid = store.log_interaction(prompt="p", completion="c")
    barrier, results, errors = threading.Barrier(8), [], []

    def post() -> None:
        try:
            barrier.wait()
            results.append(store.add_feedback(response_id=rid, kind="thumbs", value=1, idempotency_key="same"))
        except Exception as e:  # collected: an exception in a thread would otherwise pass silently
            errors.append(e)

    threads = [threading.Thread(target=post) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert len(results) == 8 and len({fid for fid, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert _count(store) == 1


def test_batch_is_all_or_nothing(store):
    a = store.log_interaction(prompt="p", completion="a")
    b = store.log_interaction(prompt="p", completion="b")
    good = [
        dict(response_id=a, kind="thumbs", value=1, idempotency_key="b1"),
        dict(response_id=a, kind="pairwise", value=1, other_response_id=b, idempotency_key="b2"),
    ]
    with pytest.raises(FeedbackError, match=r"items\[2\]\.value: rating must be in 1–5, got 0"):
        store.add_feedback_batch([*good, dict(response_id=b, kind="rating", value=0, idempotency_key="b3")])
    with pytest.raises(FeedbackError, match=r"items\[1\]\.response_id: unknown response id 'resp-gone'"):
        store.add_feedback_batch([good[0], dict(response_id="resp-gone", kind="thumbs", value=1, idempotency_key="x")])
    assert _count(store) == 0
    out = store.add_feedback_batch(good)
    assert [c for _, c in out] == [True, True]
    # a retried batch (plus one new item and a key repeated inside the batch) stores only the new item, once
    new = dict(response_id=b, kind="engagement", event="click", idempotency_key="b4")
    again = store.add_feedback_batch([*good, new, new])
    assert again[:2] == [(out[0][0], False), (out[1][0], False)]
    assert again[2][1] is True and again[3] == (again[2][0], False)
    assert _count(store) == 3


def test_model_registry(store):
    base = store.register_model("tiny@1", "/models/tiny1", metrics={"reward": 0.1})
    child = store.register_model("tiny@2", "/models/tiny2", parent="tiny@1", metrics={"reward": 0.4})
    grandchild = store.register_model("tiny@3", "/models/tiny3", parent=child)
    models = store.models()
    assert [m["id"] for m in models] == [base, child, grandchild]
    assert [m["parent_id"] for m in models] == [None, base, child]
    assert models[1]["metrics"] == {"reward": 0.4} and models[1]["status"] == "candidate"
    with pytest.raises(StoreError, match="name: model version 'tiny@1' is already registered"):
        store.register_model("tiny@1", "/elsewhere")
    with pytest.raises(StoreError, match="parent: unknown model version 'tiny@9'"):
        store.register_model("tiny@4", "/x", parent="tiny@9")
    assert len(store.models()) == 3
