"""``serve.follow_registry``: the server serves the registry's version, and a promotion swaps it between requests —
a stream that started before finishes on the old weights and is logged under the old version; new requests get the
new one; a rollback swaps back."""

from __future__ import annotations

import threading
import time

import openai
import pytest

from rewardloop.serve import ServeConfig, create_app
from rewardloop.store import Store
from rewardloop.store.rounds import LoopState

pytestmark = pytest.mark.timeout(180)


def wait_until(predicate, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_promotion_swaps_without_dropping_a_request(tmp_path, tiny_model, tokenizer, live_server_class):
    dirs = {}
    for name, seed in (("a", 0), ("b", 1)):
        dirs[name] = tmp_path / name
        tiny_model(seed=seed).save_pretrained(dirs[name])
        tokenizer.save_pretrained(dirs[name])
    with Store.open(f"sqlite:///{tmp_path / 's.db'}") as store:
        state = LoopState(store)
        store.register_model("a", str(dirs["a"]), status="serving")
        cfg = ServeConfig.model_validate(
            {
                "model": {"path": str(dirs["a"])},
                "serve": {"model_name": "m", "follow_registry": True, "registry_poll_seconds": 0.1},
            }
        )
        app = create_app(cfg, store=store)
        server = live_server_class(app).start()
        try:
            srv = app.state.server
            engine_a = srv.engine
            wait_until(lambda: srv.live[1] == "a")  # the registry's name for the weights already loaded
            assert srv.engine is engine_a  # same path: renamed, not reloaded
            client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=60)

            def greedy() -> tuple[str, str]:
                r = client.completions.create(model="m", prompt="2+2=", max_tokens=16, temperature=0)
                return r.choices[0].text, r.id

            text_a, id_a = greedy()
            assert store.get_interaction(id_a)["model_version"] == "a"
            stream = client.completions.create(
                model="m", prompt="Review of the lamp:", max_tokens=64, temperature=0, stream=True
            )
            first = next(iter(stream))  # the stream is running on engine a
            store.register_model("b", str(dirs["b"]), parent="a")
            state.promote("b")
            wait_until(lambda: srv.live[1] == "b")
            chunks = [first, *stream]
            assert chunks[-1].choices[0].finish_reason in ("stop", "length")  # finished, not dropped
            assert store.get_interaction(chunks[0].id)["model_version"] == "a"  # logged under the version it ran on
            text_b, id_b = greedy()
            assert store.get_interaction(id_b)["model_version"] == "b" and text_b != text_a
            wait_until(lambda: not engine_a.busy() and engine_a._thread is None)  # the old engine retired

            state.rollback()
            wait_until(lambda: srv.live[1] == "a")
            assert greedy()[0] == text_a
        finally:
            server.stop()


def test_concurrent_loads_in_one_process_do_not_corrupt_each_other(tmp_path, tiny_model, tokenizer):
    """A swap loads weights in a worker thread while the loop loads in another: loads take turns."""
    from rewardloop.config import ModelConfig
    from rewardloop.models import load_pretrained

    tiny_model(seed=3).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    errors, models = [], []

    def load():
        try:
            models.append(load_pretrained(ModelConfig(path=str(tmp_path)))[0])
        except Exception as e:  # collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=load) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert errors == [] and len(models) == 4
    assert all(not p.is_meta for m in models for p in m.parameters())
