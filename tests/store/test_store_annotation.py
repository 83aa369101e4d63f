"""API keys (hashed, roles, revocation) and the annotation queue (pairs, no repeats per annotator, overlap, Cohen's
κ), on SQLite and PostgreSQL."""

from __future__ import annotations

import math

import pytest
from sqlalchemy import select, text

from rewardloop.store import Store
from rewardloop.store.annotation import AnnotationQueue, cohen_kappa
from rewardloop.store.keys import ApiKeys, KeysConfig, hash_key, run
from rewardloop.store.models import ApiKey


def test_cohen_kappa_by_hand():
    # 10 items: 7 agreements; rater x: 5 a / 5 b, rater y: 6 a / 4 b → p_o = .7, p_e = .5·.6 + .5·.4 = .5, κ = .4
    x = ["a"] * 5 + ["b"] * 5
    y = ["a", "a", "a", "a", "b", "a", "a", "b", "b", "b"]
    assert cohen_kappa(x, y) == pytest.approx(0.4)
    assert cohen_kappa(x, x) == pytest.approx(1.0)
    assert cohen_kappa(["a", "b"], ["b", "a"]) == pytest.approx(-1.0)
    assert math.isnan(cohen_kappa(["a", "a"], ["a", "a"]))  # p_e = 1: undefined, not a perfect score
    assert math.isnan(cohen_kappa([], []))
    with pytest.raises(ValueError, match="same items"):
        cohen_kappa(["a"], ["a", "b"])


def test_keys_are_stored_hashed_and_checked(store):
    keys = ApiKeys(store)
    key = keys.create("alice", "annotator")
    assert key.startswith("rlk-") and len(key) > 40
    with store.engine.connect() as c:
        stored = c.execute(select(ApiKey.key_hash, ApiKey.prefix)).one()
        dump = " ".join(str(v) for row in c.execute(text("SELECT * FROM api_keys")) for v in row)
    assert stored.key_hash == hash_key(key) and key not in dump  # the key itself is nowhere in the table
    assert keys.authenticate(key) == {**keys.authenticate(key), "name": "alice", "role": "annotator"}
    assert "key_hash" not in keys.authenticate(key)
    assert keys.authenticate(key + "x") is None and keys.authenticate("") is None and keys.authenticate(None) is None
    with pytest.raises(Store.StoreError, match="role: 'root'"):
        keys.create("bob", "root")
    with pytest.raises(Store.StoreError, match="already exists"):
        keys.create("alice", "client")
    with pytest.raises(Store.StoreError, match=r"name: .*without ':'"):
        keys.create("a:b", "client")
    keys.revoke("alice")
    assert keys.authenticate(key) is None and not keys.any_active()
    new = keys.create("alice", "admin")  # the name is free again
    assert keys.authenticate(new)["role"] == "admin" and [k["revoked_at"] is None for k in keys.list()] == [False, True]
    with pytest.raises(Store.StoreError, match="no active API key named 'carol'"):
        keys.revoke("carol")


def test_keys_command(store_url, capsys):
    run(KeysConfig(action="create", name="ops", role="admin", store={"url": store_url}))
    key = capsys.readouterr().out.strip().splitlines()[-1]
    with Store.open(store_url) as s:
        assert ApiKeys(s).authenticate(key)["name"] == "ops"
    run(KeysConfig(action="list", store={"url": store_url}))
    listing = capsys.readouterr().out
    assert "ops" in listing and "admin" in listing and key not in listing


def _answers(store: Store, prompt: str, completions: list[str], version: str = "v1") -> list[str]:
    return [store.log_interaction(model_version=version, prompt=prompt, completion=c) for c in completions]


def test_pairs_from_interactions_and_add_pairs(store):
    a = _answers(store, "p1", ["x", "y", "x"])  # two distinct answers (the repeat is no comparison)
    b = _answers(store, "p2", ["only"])  # answered once: no pair
    c = _answers(store, "p3", ["m", "n"], version="v2")
    queue = AnnotationQueue(store)
    pairs = queue.pairs_from_interactions()
    assert sorted(map(sorted, pairs)) == sorted([sorted([a[0], a[1]]), sorted([c[0], c[1]])])
    assert queue.add_pairs(pairs) == 2
    assert queue.add_pairs([(p[1], p[0]) for p in pairs]) == 0  # either order is the same item
    with pytest.raises(Store.StoreError, match=r"pairs\[1\]: .* same prompt"):
        queue.add_pairs([(a[0], a[2]), (a[0], c[0])])
    with pytest.raises(Store.StoreError, match=r"pairs\[0\]: unknown response id 'nope'"):
        queue.add_pairs([("nope", b[0])])
    assert queue.progress()["items"] == 2  # the failed calls added nothing


def test_queue_never_repeats_a_pair_for_an_annotator_and_fills_overlap(store):
    queue = AnnotationQueue(store, overlap=2)
    for i in range(3):
        queue.add_pairs([tuple(_answers(store, f"q{i}", ["good", "bad"]))])
    seen = []
    while (item := queue.next_item("alice")) is not None:
        assert item["id"] not in seen and item["response"]["prompt"] == item["other"]["prompt"]
        seen.append(item["id"])
        assert queue.label(item["id"], "alice", "response", comment=" fine ") is True
    assert len(seen) == 3 and queue.count_by("alice") == 3
    assert queue.label(seen[0], "alice", "other") is False  # labelled once; a second submit changes nothing
    # bob gets the items alice started (overlap 2), then nobody needs more
    choices = {seen[0]: "response", seen[1]: "other", seen[2]: "response"}
    while (item := queue.next_item("bob")) is not None:
        queue.label(item["id"], "bob", choices[item["id"]])
    assert queue.next_item("carol") is None  # every item has its 2 labels
    p = queue.progress()
    assert p["items"] == 3 and p["labelled"] == 3 and p["complete"] == 3
    assert p["per_annotator"] == {"alice": 3, "bob": 3}
    (agree,) = p["agreement"]
    # alice: response ×3; bob: response, other, response → p_o = 2/3, p_e = 1·(2/3) → κ = 0 (no better than chance)
    assert agree["a"] == "alice" and agree["b"] == "bob" and agree["n"] == 3
    assert agree["kappa"] == pytest.approx(cohen_kappa([1.0] * 3, [1.0, 0.0, 1.0]))
    stored = [f for f in store.feedback_since(0) if f["user_id"] == "alice"]
    assert {f["value"] for f in stored} == {1.0} and stored[0]["comment"] == "fine"
    assert all(f["kind"] == "pairwise" and f["idempotency_key"].startswith("annotate:") for f in stored)


def test_label_errors_name_the_field(store):
    queue = AnnotationQueue(store)
    queue.add_pairs([tuple(_answers(store, "q", ["a", "b"]))])
    item = queue.next_item("al")
    with pytest.raises(Store.StoreError, match="choice: 'left'"):
        queue.label(item["id"], "al", "left")
    with pytest.raises(Store.StoreError, match="item: unknown annotation item 999"):
        queue.label(999, "al", "tie")
    with pytest.raises(Store.StoreError, match="overlap"):
        AnnotationQueue(store, overlap=0)
    assert store.feedback_since(0) == []


def test_migration_from_0001_keeps_data(tmp_path):
    """A database created at revision 0001 (before keys and annotation) upgrades in place with its rows intact."""
    from alembic import command
    from alembic.config import Config

    from rewardloop.store.store import MIGRATIONS, make_engine

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "0001")
    Store(engine).log_interaction(id="resp-old", model_version="v0", prompt="p", completion="c")
    engine.dispose()
    with Store.open(url) as s:
        assert s.get_interaction("resp-old")["completion"] == "c"
        assert ApiKeys(s).authenticate(ApiKeys(s).create("x", "client"))["name"] == "x"
