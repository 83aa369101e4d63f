"""A real uvicorn server on 127.0.0.1 (a free port, a background thread) serving the shared tiny llama, logging to a
real SQLite store in a temporary directory, and the real ``openai`` client pointed at it."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from rewardloop.serve import ServeConfig, create_app  # noqa: E402
from rewardloop.store import Store  # noqa: E402

MODEL = "tiny-llama"  # the served name; tests/serve/test_serve_api.py passes it as `model`


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    db = tmp_path_factory.mktemp("serve-store") / "serve.db"
    with Store.open(url=f"sqlite:///{db}") as s:
        yield s


@pytest.fixture(scope="module")
def live(tiny_llama, tokenizer, store, live_server_class):
    cfg = ServeConfig.model_validate(
        {"serve": {"model_name": MODEL, "max_batch": 16, "max_new_tokens": 64, "max_body_bytes": 20_000}}
    )
    server = live_server_class(create_app(cfg, model=tiny_llama, tokenizer=tokenizer, store=store)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(live):
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key="x", max_retries=0, timeout=60)
