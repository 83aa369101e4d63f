"""The OpenAI-compatible endpoints through a real uvicorn server and the real ``openai`` client; every choice logged
to the real store; the feedback API."""

from __future__ import annotations

import threading

import httpx
import openai
import pytest

from rewardloop.config import GenerationConfig
from rewardloop.rollout import generate

pytestmark = pytest.mark.timeout(120)
MODEL = "tiny-llama"  # the name the live server (conftest.py) serves
CHAT = [{"role": "user", "content": "what is 2+3?"}]


def greedy_reference(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    """The training engine's greedy text for ``prompt`` (rollout.generate, batch of one)."""
    return generate(
        model, tokenizer, [prompt], GenerationConfig(max_new_tokens=max_new_tokens, temperature=0)
    ).responses[0]


def test_models_and_health(client, live):
    assert [m.id for m in client.models.list().data] == [MODEL]
    health = httpx.get(f"{live.url}/health").json()
    assert health["status"] == "ok" and health["model"] == MODEL


def test_chat_greedy_equals_the_training_engine_and_is_logged(client, store, tiny_llama, tokenizer):
    r = client.chat.completions.create(
        model=MODEL,
        messages=CHAT,
        temperature=0,
        max_tokens=12,
        logprobs=True,
        top_logprobs=2,
        user="u1",
        extra_headers={"X-Session-Id": "s-9"},
    )
    assert r.id.startswith("chatcmpl-") and r.object == "chat.completion" and len(r.choices) == 1
    choice = r.choices[0]
    prompt = tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    assert choice.message.content == greedy_reference(tiny_llama, tokenizer, prompt, 12)
    assert choice.finish_reason in ("stop", "length")
    content = choice.logprobs.content
    assert "".join(t.token for t in content) == choice.message.content
    assert all(len(t.top_logprobs) == 2 and t.top_logprobs[0].logprob >= t.logprob - 1e-6 for t in content)
    assert all(t.top_logprobs[0].token == t.token for t in content)  # greedy: the chosen token is the top one
    row = store.get_interaction(r.id)
    assert row is not None and row["kind"] == "chat" and row["messages"] == CHAT
    assert row["completion"] == choice.message.content and row["prompt"] == prompt
    assert row["user_id"] == "u1" and row["session_id"] == "s-9" and row["model_version"] == MODEL
    assert row["token_logprobs"][: len(content)] == pytest.approx([t.logprob for t in content], abs=1e-6)
    assert row["sampling"]["temperature"] == 0 and row["sampling"]["max_tokens"] == 12
    assert row["propensity"] == 1.0 and row["n_candidates"] == 1 and row["latency_ms"] > 0


def test_streaming_chunks_concatenate_to_the_non_streamed_text(client):
    kwargs = {"model": MODEL, "messages": CHAT, "temperature": 0, "max_tokens": 20}
    whole = client.chat.completions.create(**kwargs).choices[0].message.content
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    ids = {c.id for c in chunks}
    assert len(ids) == 1 and chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole and len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].usage.completion_tokens >= 1


def boundary_stop(tokens: list[str]) -> str:
    """A two-character stop string across a token boundary, first found there: a stream must hold back its first
    character until the next token shows whether the stop string follows."""
    text = "".join(tokens)
    for k in range(1, len(tokens) - 1):
        end = len("".join(tokens[: k + 1]))
        stop = text[end - 1 : end + 1]
        if len(stop) == 2 and text.index(stop) == end - 1:
            return stop
    raise AssertionError(f"no boundary stop string in {tokens}")


def test_completions_logprobs_and_stop(client, store, tiny_llama, tokenizer):
    prompt = "the product is great"
    r = client.completions.create(model=MODEL, prompt=prompt, temperature=0, max_tokens=16, logprobs=3)
    text = r.choices[0].text
    assert r.id.startswith("cmpl-") and text == greedy_reference(tiny_llama, tokenizer, prompt, 16)
    lp = r.choices[0].logprobs
    assert "".join(lp.tokens) == text and len(lp.token_logprobs) == len(lp.tokens)
    assert all(
        len(top) >= 1 and max(top.values()) >= p - 1e-6
        for top, p in zip(lp.top_logprobs, lp.token_logprobs, strict=True)
    )
    assert lp.text_offset[0] == 0 and all(b > a for a, b in zip(lp.text_offset, lp.text_offset[1:], strict=False))
    assert store.get_interaction(r.id)["kind"] == "completion"
    stop = boundary_stop(lp.tokens)
    cut = client.completions.create(model=MODEL, prompt=prompt, temperature=0, max_tokens=16, stop=[stop])
    assert cut.choices[0].text == text[: text.index(stop)] and cut.choices[0].finish_reason == "stop"
    streamed = client.completions.create(
        model=MODEL, prompt=prompt, temperature=0, max_tokens=16, stop=stop, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed) == cut.choices[0].text


def test_n_choices_each_logged_with_propensity(client, store):
    r = client.chat.completions.create(model=MODEL, messages=CHAT, n=3, temperature=1.0, max_tokens=10, seed=5)
    assert [c.index for c in r.choices] == [0, 1, 2]
    logged = [store.get_interaction(c.response_id) for c in r.choices]  # each choice's own response id
    assert [row["candidate_index"] for row in logged] == [0, 1, 2]
    assert all(row["n_candidates"] == 3 and row["propensity"] == pytest.approx(1 / 3) for row in logged)
    assert [row["completion"] for row in logged] == [c.message.content for c in r.choices]
    assert len({c.message.content for c in r.choices}) > 1  # seeds seed+i: the three samples differ


def test_seed_reproduces_sampled_text(client):
    kwargs = {"model": MODEL, "prompt": "9", "temperature": 1.0, "top_p": 0.95, "max_tokens": 16}
    a = client.completions.create(seed=123, **kwargs).choices[0].text
    b = client.completions.create(seed=123, **kwargs).choices[0].text
    others = {client.completions.create(seed=s, **kwargs).choices[0].text for s in (1, 2, 3)}
    assert a == b and len(others | {a}) > 1


def test_concurrent_clients_get_their_solo_greedy_answers_and_share_steps(client, live, tiny_llama, tokenizer):
    prompts = [f"{i}+{i * 7}=" if i % 2 else f"the review number {i} says" for i in range(8)]
    solo = {p: greedy_reference(tiny_llama, tokenizer, p, 24) for p in prompts}
    before = httpx.get(f"{live.url}/health").json()["engine"]
    got, barrier = {}, threading.Barrier(len(prompts))

    def ask(p):
        barrier.wait()
        got[p] = client.completions.create(model=MODEL, prompt=p, temperature=0, max_tokens=24).choices[0].text

    threads = [threading.Thread(target=ask, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert got == solo
    after = httpx.get(f"{live.url}/health").json()["engine"]
    assert after["max_rows"] > 1 and after["shared_steps"] > before["shared_steps"]
    # shared steps: fewer decode steps than tokens generated
    assert after["steps"] - before["steps"] < after["tokens"] - before["tokens"]


def test_invalid_requests_name_the_field(client, live):
    with pytest.raises(openai.UnprocessableEntityError) as e:
        client.chat.completions.create(model=MODEL, messages=CHAT, temperature=5)
    assert e.value.body["param"] == "temperature"
    with pytest.raises(openai.UnprocessableEntityError) as e:
        client.completions.create(model=MODEL, prompt="x", presence_penalty=0.5)
    assert e.value.body["param"] == "presence_penalty"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-9", prompt="x")
    with pytest.raises(openai.UnprocessableEntityError) as e:
        client.completions.create(model=MODEL, prompt="x " * 600, max_tokens=10)
    assert e.value.body["param"] == "prompt"
    big = httpx.post(f"{live.url}/v1/completions", json={"model": MODEL, "prompt": "x" * 30_000})
    assert big.status_code == 413
    chunked = httpx.post(
        f"{live.url}/v1/completions",
        content=iter([b'{"model": "tiny-llama", "prompt": "', b"x" * 30_000, b'"}']),
    )
    assert chunked.status_code == 413


def test_feedback_idempotent_and_validated(client, live, store):
    rid = client.completions.create(model=MODEL, prompt="1+1=", temperature=0, max_tokens=4).id
    post = {"response_id": rid, "kind": "thumbs", "value": 1, "idempotency_key": f"k-{rid}"}
    first = httpx.post(f"{live.url}/v1/feedback", json=post)
    again = httpx.post(f"{live.url}/v1/feedback", json=post)
    assert first.status_code == 201 and first.json()["created"] is True
    assert again.status_code == 200 and again.json() == {"id": first.json()["id"], "created": False}
    bad = httpx.post(f"{live.url}/v1/feedback", json={**post, "kind": "rating", "value": 9, "idempotency_key": "k2"})
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "value"
    unknown = httpx.post(f"{live.url}/v1/feedback", json={**post, "response_id": "nope", "idempotency_key": "k3"})
    assert unknown.status_code == 422 and unknown.json()["error"]["param"] == "response_id"
    missing = httpx.post(f"{live.url}/v1/feedback", json={"response_id": rid, "kind": "thumbs"})
    assert missing.status_code == 422 and missing.json()["error"]["param"] == "idempotency_key"
    batch = [
        {"response_id": rid, "kind": "engagement", "event": "click", "idempotency_key": f"e1-{rid}"},
        {"response_id": rid, "kind": "rating", "value": 4, "idempotency_key": f"e2-{rid}"},
        post,
    ]
    out = httpx.post(f"{live.url}/v1/feedback/batch", json={"items": batch})
    assert out.status_code == 200
    assert [r["created"] for r in out.json()["results"]] == [True, True, False]
    bad_batch = httpx.post(
        f"{live.url}/v1/feedback/batch", json={"items": [batch[0], {**post, "kind": "x", "idempotency_key": "z"}]}
    )
    assert bad_batch.status_code == 422 and bad_batch.json()["error"]["param"] == "items[1].kind"
    kinds = [f["kind"] for f in store.feedback_since(0) if f["response_id"] == rid]
    assert sorted(kinds) == ["engagement", "rating", "thumbs"]


def test_a_consumer_that_stops_early_cancels_its_rows(tiny_llama, tokenizer):
    """What a streaming client that disconnects does: the response generator is closed after its first delta."""
    import asyncio

    from rewardloop.serve.app import Choice, run_choices
    from rewardloop.serve.engine import ContinuousBatcher, SamplingParams

    engine = ContinuousBatcher(tiny_llama, tokenizer)
    submitted = []
    submit = engine.submit
    engine.submit = lambda *a: submitted.append(submit(*a)) or submitted[-1]
    ids = tokenizer("9")["input_ids"]
    choices = [Choice(i, "9", ids, SamplingParams(max_tokens=50, temperature=0), i, 2) for i in range(2)]

    async def first_then_close():
        stream = run_choices(engine, choices)
        first = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(0)  # the generator submits its rows
        engine.step()  # the engine thread is not started: step by hand
        await asyncio.wait_for(first, 10)
        await stream.aclose()

    asyncio.run(asyncio.wait_for(first_then_close(), 30))
    assert len(submitted) == 2 and all(s.cancelled for s in submitted)
    engine.run_until_idle()
    assert not engine.rows and all(len(s.token_ids) == 1 for s in submitted)


class FailingStore:
    def log_interactions(self, items):
        raise OSError("disk full")


def test_an_unlogged_answer_is_a_500_not_a_response_id(tiny_llama, tokenizer):
    from fastapi.testclient import TestClient

    from rewardloop.serve import ServeConfig, create_app

    cfg = ServeConfig.model_validate({"serve": {"model_name": MODEL}})
    with TestClient(create_app(cfg, model=tiny_llama, tokenizer=tokenizer, store=FailingStore())) as c:
        r = c.post("/v1/completions", json={"model": MODEL, "prompt": "1", "max_tokens": 3})
        assert r.status_code == 500 and "disk full" in r.json()["error"]["message"] and "id" not in r.json()
        lines = c.post("/v1/completions", json={"model": MODEL, "prompt": "1", "max_tokens": 3, "stream": True}).text
        assert "disk full" in lines and "[DONE]" not in lines
