"""``serve.follow_registry``: serve whichever model version the store's registry marks ``serving``, and swap to a newly
promoted (or rolled-back) one without dropping a request.

A swap loads the new weights in a worker thread, starts a second engine on them and replaces the server's
``(engine, version)`` pair in one assignment: requests that started before keep the old pair — they finish on the old
engine and are logged under the old version — and new requests get the new one. The old engine stops once it has no
rows left. The tokenizer stays the server's (a version with a different vocabulary needs a restart).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from starlette.concurrency import run_in_threadpool

from rewardloop.models.loading import load_pretrained
from rewardloop.serve.engine import ContinuousBatcher
from rewardloop.store.rounds import LoopState

log = logging.getLogger(__name__)


def retire(engine: ContinuousBatcher, timeout_s: float = 600.0) -> None:
    """Stop ``engine`` once its in-flight rows are done (or after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while engine.busy() and time.monotonic() < deadline:
        time.sleep(0.05)
    engine.stop()


def swap(server, name: str, path: str) -> None:
    """Serve version ``name`` (weights at ``path``) from now on (blocking: call from a worker thread)."""
    model, _ = load_pretrained(server.cfg.model.model_copy(update={"path": path}))
    model.eval()
    engine = ContinuousBatcher(model, server.tokenizer, max_batch=server.cfg.serve.max_batch)
    engine.start()
    old, _ = server.live
    server.model, server.path, server.live = model, path, (engine, name)
    threading.Thread(target=retire, args=(old,), name="rewardloop-retire-engine", daemon=True).start()
    log.info("now serving %s (%s)", name, path)


def check_registry(server, state: LoopState) -> bool:
    """Swap if the registry's serving version differs from the server's; True when it swapped."""
    current = state.serving()
    if current is None or current["name"] == server.live[1]:
        return False
    if current["path"] == server.path:  # the weights being served, registered under a name: no reload
        server.live = (server.live[0], current["name"])
        return False
    swap(server, current["name"], current["path"])
    return True


async def follow(server, poll_seconds: float) -> None:
    """Check the registry every ``poll_seconds`` until cancelled (a failed check is logged, not fatal)."""
    state = LoopState(server.store)
    while True:
        try:
            await run_in_threadpool(check_registry, server, state)
        except Exception:
            log.exception("could not follow the model registry")
        await asyncio.sleep(poll_seconds)
