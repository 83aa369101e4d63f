"""``serve.auth: true`` through a real uvicorn server and the real ``openai`` client: no key → 401, a key of a lower
role → 403, neither writes anything; oversized and malformed requests get 4xx naming the problem and change nothing;
annotators cannot export or open the admin page."""

from __future__ import annotations

import httpx
import openai
import pytest
from sqlalchemy import func, select

from rewardloop.serve import ServeConfig, create_app
from rewardloop.store import Feedback, Interaction, Store
from rewardloop.store.keys import ApiKeys

pytestmark = pytest.mark.timeout(120)
MODEL = "tiny-llama"


@pytest.fixture(scope="module")
def secured(tiny_llama, tokenizer, tmp_path_factory, live_server_class):
    """(server, store, {role: key}) for a server with auth on."""
    db = tmp_path_factory.mktemp("auth-store") / "auth.db"
    with Store.open(url=f"sqlite:///{db}") as store:
        keys = ApiKeys(store)
        role_keys = {role: keys.create(f"{role}-1", role) for role in ("client", "annotator", "admin")}
        cfg = ServeConfig.model_validate(
            {"serve": {"model_name": MODEL, "auth": True, "max_new_tokens": 16, "max_body_bytes": 4096}}
        )
        server = live_server_class(create_app(cfg, model=tiny_llama, tokenizer=tokenizer, store=store)).start()
        yield server, store, role_keys
        server.stop()


def counts(store: Store) -> tuple[int, int]:
    with store.engine.connect() as c:
        return c.scalar(select(func.count()).select_from(Interaction)), c.scalar(
            select(func.count()).select_from(Feedback)
        )


def client(server, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=60)


def test_no_key_or_a_wrong_key_gets_401_and_writes_nothing(secured):
    server, store, _ = secured
    before = counts(store)
    with pytest.raises(openai.AuthenticationError):
        client(server, "rlk-not-a-key").completions.create(model=MODEL, prompt="2+2=", max_tokens=4)
    r = httpx.post(f"{server.url}/v1/chat/completions", json={"model": MODEL, "messages": "not a list"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"  # auth first, whatever the body
    r = httpx.post(f"{server.url}/v1/feedback", json={"response_id": "x", "kind": "thumbs", "value": 1})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert httpx.get(f"{server.url}/health").status_code == 200  # the one open route
    assert counts(store) == before


def test_client_key_generates_and_posts_feedback_but_cannot_export(secured):
    server, store, keys = secured
    r = client(server, keys["client"]).completions.create(model=MODEL, prompt="2+2=", max_tokens=4, temperature=0)
    assert store.get_interaction(r.id) is not None
    headers = {"Authorization": f"Bearer {keys['client']}"}
    fb = {"response_id": r.id, "kind": "thumbs", "value": 1, "idempotency_key": "auth-k1"}
    assert httpx.post(f"{server.url}/v1/feedback", json=fb, headers=headers).status_code == 201
    r = httpx.get(f"{server.url}/v1/feedback/export", params={"format": "kto"}, headers=headers)
    assert r.status_code == 403 and "'admin' role" in r.json()["error"]["message"]


def test_annotator_cannot_export_or_see_the_admin_page_admin_can(secured):
    server, _, keys = secured
    ann = {"Authorization": f"Bearer {keys['annotator']}"}
    assert httpx.get(f"{server.url}/v1/feedback/export", headers=ann).status_code == 403
    assert httpx.get(f"{server.url}/annotate/admin", headers=ann).status_code == 403
    assert httpx.get(f"{server.url}/annotate", headers=ann).status_code == 200
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    r = httpx.get(f"{server.url}/v1/feedback/export", params={"format": "kto"}, headers=admin)
    assert r.status_code == 200 and r.json()["rows"][0]["label"] is True
    r = httpx.get(f"{server.url}/v1/feedback/export", params={"format": "nope"}, headers=admin)
    assert r.status_code == 422 and "format" in r.json()["error"]["message"]
    assert httpx.get(f"{server.url}/annotate/admin", headers=admin).status_code == 200


def test_revoked_key_stops_working(secured):
    server, store, _ = secured
    keys = ApiKeys(store)
    key = keys.create("temp", "client")
    headers = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{server.url}/v1/models", headers=headers).status_code == 200
    keys.revoke("temp")
    assert httpx.get(f"{server.url}/v1/models", headers=headers).status_code == 401


def test_oversized_and_malformed_requests_are_4xx_and_change_nothing(secured):
    server, store, keys = secured
    headers = {"Authorization": f"Bearer {keys['client']}", "Content-Type": "application/json"}
    before = counts(store)
    big = {"model": MODEL, "prompt": "x" * 10_000}
    r = httpx.post(f"{server.url}/v1/completions", json=big, headers=headers)
    assert r.status_code == 413 and "4096 bytes" in r.json()["error"]["message"]
    r = httpx.post(f"{server.url}/v1/completions", content=b"{not json", headers=headers)
    assert r.status_code == 422
    r = httpx.post(f"{server.url}/v1/completions", json={"model": MODEL, "prompt": "a", "n": 0}, headers=headers)
    assert r.status_code == 422 and r.json()["error"]["param"] == "n"
    fb = {"response_id": "resp-none", "kind": "thumbs", "value": 1, "idempotency_key": "k-x"}
    r = httpx.post(f"{server.url}/v1/feedback", json=fb, headers=headers)
    assert r.status_code == 422 and "unknown response id 'resp-none'" in r.json()["error"]["message"]
    assert counts(store) == before


def test_serve_refuses_an_open_non_loopback_bind():
    from rewardloop.serve import serve

    cfg = ServeConfig.model_validate({"serve": {"host": "0.0.0.0"}})
    with pytest.raises(ValueError, match=r"serve\.host: '0\.0\.0\.0' is not loopback and serve\.auth is false"):
        serve(cfg)


def test_export_rejects_an_unknown_query_parameter(secured):
    server, _, keys = secured
    admin = {"Authorization": f"Bearer {keys['admin']}"}
    r = httpx.get(f"{server.url}/v1/feedback/export", params={"fromat": "kto"}, headers=admin)
    assert r.status_code == 422 and r.json()["error"]["param"] == "fromat"
