"""A real uvicorn server on 127.0.0.1 (a free port, a background thread) serving the shared tiny llama, logging to a
real SQLite store in a temporary directory, and the real ``openai`` client pointed at it."""

from __future__ import annotations

import socket
import threading
import time

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from rewardloop.serve import ServeConfig, create_app  # noqa: E402
from rewardloop.store import Store  # noqa: E402

MODEL = "tiny-llama"  # the served name; tests/serve/test_serve_api.py passes it as `model`


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn.Server in a thread; ``stop()`` sets ``should_exit`` and joins."""

    def __init__(self, app):
        self.app, self.port = app, free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    db = tmp_path_factory.mktemp("serve-store") / "serve.db"
    with Store.open(url=f"sqlite:///{db}") as s:
        yield s


@pytest.fixture(scope="module")
def live(tiny_llama, tokenizer, store):
    cfg = ServeConfig.model_validate(
        {"serve": {"model_name": MODEL, "max_batch": 16, "max_new_tokens": 64, "max_body_bytes": 20_000}}
    )
    server = LiveServer(create_app(cfg, model=tiny_llama, tokenizer=tokenizer, store=store)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(live):
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key="x", max_retries=0, timeout=60)


@pytest.fixture(scope="session")
def live_server_class():
    """``LiveServer``, for test modules that start a server with their own config (auth on, a browser, ...)."""
    return LiveServer
