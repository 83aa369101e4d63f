"""The FastAPI app: OpenAI-compatible generation over the continuous-batching engine, logged to the store, and the
feedback API. ``create_app(cfg)`` builds it; ``serve(cfg)`` runs it under uvicorn (``rewardloop serve``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from rewardloop.chat import render
from rewardloop.rollout import encode_prompts
from rewardloop.serve.annotate import add_annotation_routes
from rewardloop.serve.auth import Auth
from rewardloop.serve.config import ServeConfig
from rewardloop.serve.engine import ContinuousBatcher, Delta, SamplingParams
from rewardloop.serve.protocol import ChatRequest, CompletionRequest, FeedbackBatch, FeedbackRequest, Sampling
from rewardloop.serve.writer import GroupCommitWriter
from rewardloop.store.annotation import AnnotationQueue
from rewardloop.store.export import EXPORTERS
from rewardloop.store.keys import ApiKeys

LOOPBACK = ("127.0.0.1", "localhost", "::1")
TRLFormat = Literal["pairs", "kto", "ratings", "sft", "engagement"]


def error_body(message: str, param: str | None = None, kind: str = "invalid_request_error", **extra) -> dict:
    """OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""
    return {"error": {"message": message, "type": kind, "param": param, "code": None}, **extra}


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413, by its Content-Length or as it streams in."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            response = JSONResponse(error_body(f"request body over {self.max_bytes} bytes", "body"), status_code=413)
            return await response(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:  # FastAPI passes an HTTPException raised while reading the body through
                raise HTTPException(413, f"request body over {self.max_bytes} bytes")
            return message

        await self.app(scope, counted, send)


@dataclass
class Choice:
    """One generated choice of a request: what to decode, and what came back."""

    index: int
    prompt: str
    prompt_ids: list[int]
    params: SamplingParams
    candidate: int  # index among the n samples of the same prompt
    n: int
    deltas: list[Delta] = field(default_factory=list)
    finish_reason: str | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def text(self) -> str:
        return "".join(d.text for d in self.deltas)

    def reported(self, eos: set[int]) -> list[Delta]:
        """The deltas whose tokens are part of the completion (all but a final EOS)."""
        last = self.deltas[-1:] if self.deltas else []
        return self.deltas[:-1] if last and last[0].token_id in eos else self.deltas


class Handover:
    """Engine thread → event loop: the deltas of every request are gathered and handed over in one wake-up of the
    loop, not one ``call_soon_threadsafe`` per token per request (32 streams decoding together: one wake-up per step
    instead of 32)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop, self._lock, self._pending, self._scheduled = loop, threading.Lock(), [], False

    def put(self, queue: asyncio.Queue, item: Any) -> None:
        with self._lock:
            self._pending.append((queue, item))
            if self._scheduled:
                return
            self._scheduled = True
        with contextlib.suppress(RuntimeError):  # the event loop closed (shutdown): nobody is listening
            self.loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            items, self._pending, self._scheduled = self._pending, [], False
        for queue, item in items:
            queue.put_nowait(item)


_HANDOVERS: dict[int, Handover] = {}


def handover() -> Handover:
    """The running event loop's Handover."""
    loop = asyncio.get_running_loop()
    if (h := _HANDOVERS.get(id(loop))) is None or h.loop is not loop:
        h = _HANDOVERS[id(loop)] = Handover(loop)
    return h


async def run_choices(engine: ContinuousBatcher, choices: list[Choice]) -> AsyncIterator[tuple[Choice, Delta]]:
    """Submit every choice and yield (choice, delta) as the engine thread produces them; rows of a consumer that
    stops early (a client that went away) are cancelled."""
    hand, queue = handover(), asyncio.Queue()
    started = time.perf_counter()

    def sink_for(choice: Choice):
        def sink(delta: Delta) -> None:
            hand.put(queue, (choice, delta))

        return sink

    seqs = [engine.submit(c.prompt_ids, c.params, sink_for(c)) for c in choices]
    try:
        left = len(choices)
        while left:
            choice, delta = await queue.get()
            if delta.error:
                choice.error = delta.error
            else:
                choice.deltas.append(delta)
            if delta.finish_reason:
                choice.finish_reason, choice.seconds = delta.finish_reason, time.perf_counter() - started
                left -= 1
            yield choice, delta
    finally:
        for seq in seqs:
            if seq.finish_reason is None:
                seq.cancel()


class Server:
    """What the endpoints share: config, model, tokenizer, engine, store."""

    def __init__(self, cfg: ServeConfig, model, tokenizer, store):
        self.cfg, self.model, self.tokenizer, self.store = cfg, model, tokenizer, store
        self.writer = GroupCommitWriter(store)
        self.auth = Auth(ApiKeys(store), enabled=cfg.serve.auth)
        self.queue = AnnotationQueue(store, overlap=cfg.serve.annotate_overlap)
        self.name = cfg.model_name()
        # (engine, model version) swapped as one (serve/follow.py); a request keeps the pair it started with
        self.live = (ContinuousBatcher(model, tokenizer, max_batch=cfg.serve.max_batch), cfg.model.path or self.name)
        self.path = cfg.model.path  # where the served weights came from (None: a preset, or a model passed in)
        self.created = int(time.time())

    @property
    def engine(self) -> ContinuousBatcher:
        return self.live[0]

    def params(self, req: Sampling, candidate: int, top_logprobs: int) -> SamplingParams:
        gen, cap = self.cfg.gen, self.cfg.serve.max_new_tokens
        max_tokens = getattr(req, "max_completion_tokens", None) or req.max_tokens or gen.max_new_tokens
        return SamplingParams(
            max_tokens=min(max_tokens, cap),
            temperature=gen.temperature if req.temperature is None else req.temperature,
            top_p=gen.top_p if req.top_p is None else req.top_p,
            top_k=gen.top_k,
            stop=list(req.stop or gen.stop),
            seed=None if req.seed is None else req.seed + candidate,  # n seeded samples differ from each other
            top_logprobs=top_logprobs,
        )

    def choices(self, req: Sampling, prompts: list[str], top_logprobs: int, engine: ContinuousBatcher) -> list[Choice]:
        """prompts × n choices, checked against the model's context (ValueError names the field)."""
        if req.model != self.name:
            raise HTTPException(404, error_body(f"model {req.model!r} is not served; this server has {self.name!r}"))
        if req.n > self.cfg.serve.max_n:
            raise ValueError(f"n: {req.n} is over this server's limit of {self.cfg.serve.max_n}")
        out = []
        for p, (prompt, ids) in enumerate(zip(prompts, encode_prompts(self.tokenizer, prompts), strict=True)):
            for j in range(req.n):
                params = self.params(req, j, top_logprobs)
                engine.check(ids, params)
                out.append(Choice(p * req.n + j, prompt, ids, params, j, req.n))
        return out

    def response_ids(self, prefix: str, choices: list[Choice]) -> tuple[str, list[str]]:
        """The response id, and each choice's own logged id (the same when there is one choice)."""
        rid = f"{prefix}-{uuid.uuid4().hex}"
        return rid, [rid if len(choices) == 1 else f"{rid}-{c.index}" for c in choices]

    def log_rows(self, kind: str, ids: list[str], choices: list[Choice], req: Sampling, messages, session, version):
        """The interaction row of every finished choice (the writer commits them; ``store.log_interactions``)."""
        rows = []
        for rid, c in zip(ids, choices, strict=True):
            p = c.params
            sampling = {"temperature": p.temperature, "top_p": p.top_p, "top_k": p.top_k, "max_tokens": p.max_tokens}
            sampling |= {"stop": p.stop, "seed": p.seed, "n": c.n, "finish_reason": c.finish_reason}
            rows.append(
                {
                    "id": rid,
                    "model_version": version,
                    "kind": kind,
                    "prompt": c.prompt,
                    "messages": messages,
                    "completion": c.text,
                    "sampling": sampling,
                    "token_logprobs": [d.logprob for d in c.deltas],
                    "latency_ms": c.seconds * 1000.0,
                    "user_id": req.user,
                    "session_id": session,
                    "candidate_index": c.candidate,
                    "n_candidates": c.n,
                    "propensity": 1.0 / c.n,
                }
            )
        return rows

    def token_text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    def usage(self, choices: list[Choice]) -> dict[str, int]:
        prompt = sum(len(c.prompt_ids) for c in choices if c.candidate == 0)
        completion = sum(len(c.deltas) for c in choices)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    # -- response pieces ---------------------------------------------------------------------------------------
    def chat_logprobs(self, deltas: list[Delta]) -> dict:
        def entry(token_id: int, logprob: float) -> dict:
            text = self.token_text(token_id)
            return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

        return {
            "content": [
                {**entry(d.token_id, d.logprob), "top_logprobs": [entry(t, lp) for t, lp in d.top_logprobs or []]}
                for d in deltas
            ]
        }

    def completion_logprobs(self, deltas: list[Delta], offset: int = 0) -> dict:
        tokens = [self.token_text(d.token_id) for d in deltas]
        offsets = [offset + sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]
        top = [{self.token_text(t): lp for t, lp in d.top_logprobs or []} for d in deltas]
        return {
            "tokens": tokens,
            "token_logprobs": [d.logprob for d in deltas],
            "top_logprobs": top,
            "text_offset": offsets,
        }


def sse(data: dict | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


async def generate_response(server: Server, request: Request, req: Sampling, chat: bool) -> Any:
    """Run a chat or completion request, streaming or not; log every choice before answering."""
    if chat:
        messages = [{"role": m.role, "content": m.content} for m in req.messages]
        try:
            prompts = [render(server.tokenizer, messages, add_generation_prompt=True)]
        except Exception as e:  # the chat template rejected the conversation (e.g. roles must alternate)
            raise ValueError(f"messages: {e}") from e
        top = (req.top_logprobs or 1) if req.logprobs else 0
    else:
        messages, prompts, top = None, req.prompt, req.logprobs or 0
    engine, version = server.live
    choices = server.choices(req, prompts, top, engine)
    prefix, obj = ("chatcmpl", "chat.completion") if chat else ("cmpl", "text_completion")
    rid, ids = server.response_ids(prefix, choices)
    session = request.headers.get("x-session-id")
    head = {"id": rid, "created": int(time.time()), "model": server.name}

    async def finish() -> None:
        failed = [c.error for c in choices if c.error]
        if failed:
            raise RuntimeError(failed[0])
        try:
            rows = server.log_rows("chat" if chat else "completion", ids, choices, req, messages, session, version)
            await asyncio.wrap_future(server.writer.submit(rows))
        except Exception as e:  # not the client's fault: 500, and no response id that the store does not hold
            raise RuntimeError(f"could not log the interaction: {type(e).__name__}: {e}") from e

    if req.stream:
        return StreamingResponse(
            stream_chunks(server, engine, choices, ids, head, obj + ".chunk", chat, req, finish),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    async for _ in run_choices(engine, choices):
        pass
    try:
        await finish()
    except RuntimeError as e:
        return JSONResponse(error_body(str(e), kind="server_error"), status_code=500)
    out = []
    for rid_i, c in zip(ids, choices, strict=True):
        shown = c.reported(engine.eos)
        if chat:
            logprobs = server.chat_logprobs(shown) if req.logprobs else None
            body = {"message": {"role": "assistant", "content": c.text}, "logprobs": logprobs}
        else:
            body = {"text": c.text, "logprobs": server.completion_logprobs(shown) if req.logprobs is not None else None}
        out.append({"index": c.index, **body, "finish_reason": c.finish_reason, "response_id": rid_i})
    return {**head, "object": obj, "choices": out, "usage": server.usage(choices)}


async def stream_chunks(server, engine, choices, ids, head, obj, chat: bool, req, finish) -> AsyncIterator[str]:
    """SSE: ``data: {chunk}`` per token (text held back at a possible stop string), then ``data: [DONE]``."""
    base = {**head, "object": obj}
    if chat:
        for c, rid_i in zip(choices, ids, strict=True):
            first = {"index": c.index, "delta": {"role": "assistant", "content": ""}, "response_id": rid_i}
            yield sse({**base, "choices": [{**first, "logprobs": None, "finish_reason": None}]})
    sent_chars = {c.index: 0 for c in choices}
    wants_logprobs = bool(req.logprobs) if chat else req.logprobs is not None
    async for c, d in run_choices(engine, choices):
        if d.error:
            continue
        eos = d.token_id in engine.eos
        if not d.text and not d.finish_reason and not (wants_logprobs and not eos):
            continue
        shown = [] if eos else [d]
        if chat:
            logprobs = server.chat_logprobs(shown) if wants_logprobs else None
            choice = {"index": c.index, "delta": {"content": d.text}, "logprobs": logprobs}
        else:
            logprobs = server.completion_logprobs(shown, sent_chars[c.index]) if wants_logprobs else None
            choice = {"index": c.index, "text": d.text, "logprobs": logprobs}
        sent_chars[c.index] += len(d.text)
        yield sse({**base, "choices": [{**choice, "finish_reason": d.finish_reason}]})
    try:
        await finish()
    except RuntimeError as e:
        yield sse(error_body(str(e), kind="server_error"))
        return
    if req.stream_options and req.stream_options.include_usage:
        yield sse({**base, "choices": [], "usage": server.usage(choices)})
    yield sse("[DONE]")


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError):
        errors = exc.errors()
        fields = [".".join(str(p) for p in e["loc"] if p != "body") or "body" for e in errors]
        message = "; ".join(f"{f}: {e['msg']}" for f, e in zip(fields, errors, strict=True))
        detail = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in errors]
        return JSONResponse(error_body(message, fields[0] if fields else None, detail=detail), status_code=422)

    @app.exception_handler(ValueError)
    async def bad_value(_: Request, exc: ValueError):
        message = str(exc)
        param = getattr(exc, "field", None) or message.partition(":")[0].strip() or None
        return JSONResponse(error_body(message, param), status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException):
        body = exc.detail if isinstance(exc.detail, dict) else error_body(str(exc.detail))
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def add_routes(app: FastAPI, server: Server) -> None:
    auth = server.auth

    @app.get("/health")
    def health():
        engine = server.engine
        stats = {"engine": dict(engine.stats), "log_commits": server.writer.commits}
        return {"status": "ok", "model": server.name, "version": server.live[1], "running": len(engine.rows), **stats}

    @app.get("/v1/models", dependencies=[auth.needs("client")])
    def models():
        card = {"id": server.name, "object": "model", "created": server.created, "owned_by": "rewardloop"}
        return {"object": "list", "data": [card]}

    @app.post("/v1/chat/completions", dependencies=[auth.needs("client")])
    async def chat_completions(body: ChatRequest, request: Request):
        return await generate_response(server, request, body, chat=True)

    @app.post("/v1/completions", dependencies=[auth.needs("client")])
    async def completions(body: CompletionRequest, request: Request):
        return await generate_response(server, request, body, chat=False)

    @app.post("/v1/feedback", dependencies=[auth.needs("client")])
    def feedback(body: FeedbackRequest):
        fid, created = server.store.add_feedback(**body.model_dump())
        return JSONResponse({"id": fid, "created": created}, status_code=201 if created else 200)

    @app.post("/v1/feedback/batch", dependencies=[auth.needs("client")])
    def feedback_batch(body: FeedbackBatch):
        results = server.store.add_feedback_batch([item.model_dump() for item in body.items])
        return {"results": [{"id": fid, "created": created} for fid, created in results]}

    @app.get("/v1/feedback/export", dependencies=[auth.needs("admin")])
    def feedback_export(request: Request, format: TRLFormat = "pairs"):
        """The stored feedback as TRL-format rows (as `rewardloop feedback export`); admins only."""
        if unknown := sorted(set(request.query_params) - {"format"}):  # `?fromat=kto` must not export pairs
            raise ValueError(f"{unknown[0]}: unknown query parameter (allowed: format)")
        skipped: Counter = Counter()
        rows = list(EXPORTERS[format](server.store, skipped))
        return {"format": format, "rows": rows, "skipped": dict(skipped)}

    add_annotation_routes(app, auth, server.queue)


def create_app(cfg: ServeConfig | None = None, model=None, tokenizer=None, store=None) -> FastAPI:
    """The app for ``cfg``; ``model``/``tokenizer`` default to ``load_pretrained(cfg.model)`` and ``store`` to
    ``Store.open(url=cfg.store.url)`` (closed on shutdown; a store passed in is the caller's to close)."""
    cfg = cfg or ServeConfig()
    if model is None or tokenizer is None:
        from rewardloop.models.loading import load_pretrained

        model, tokenizer = load_pretrained(cfg.model)
    model.eval()
    own_store = store is None
    if own_store:
        from rewardloop.store import Store

        store = Store.open(url=cfg.store.url)
    server = Server(cfg, model, tokenizer, store)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        server.engine.start()
        server.writer.start()
        follower = None
        if cfg.serve.follow_registry:
            from rewardloop.serve.follow import check_registry, follow
            from rewardloop.store.rounds import LoopState

            await run_in_threadpool(check_registry, server, LoopState(store))  # start on the registry's version
            follower = asyncio.create_task(follow(server, cfg.serve.registry_poll_seconds))
        try:
            yield
        finally:
            if follower is not None:
                follower.cancel()
            server.engine.stop()
            server.writer.stop()
            if own_store:
                store.close()

    app = FastAPI(title="rewardloop", summary="OpenAI-compatible serving with feedback logging", lifespan=lifespan)
    app.state.server = server
    app.add_middleware(BodyLimit, max_bytes=cfg.serve.max_body_bytes)
    install_handlers(app)
    add_routes(app, server)
    return app


def serve(cfg: ServeConfig, resume: bool = False) -> None:
    """``rewardloop serve``: run the app under uvicorn until interrupted (``resume`` is ignored)."""
    import uvicorn

    if cfg.serve.host not in LOOPBACK and not cfg.serve.auth:
        raise ValueError(
            f"serve.host: {cfg.serve.host!r} is not loopback and serve.auth is false — anyone who can reach it could "
            "generate, post feedback and export; create keys (`rewardloop keys create --name NAME --role admin`) and "
            "set serve.auth=true"
        )
    app = create_app(cfg)
    print(f"rewardloop serve: {cfg.model_name()} on http://{cfg.serve.host}:{cfg.serve.port}/v1")
    uvicorn.run(app, host=cfg.serve.host, port=cfg.serve.port, log_level=cfg.serve.log_level)
