"""``BackgroundServer``: an app under uvicorn in a daemon thread on loopback — for notebooks, tests and demos."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from fastapi import FastAPI


class BackgroundServer:
    """``app`` under uvicorn in a daemon thread on 127.0.0.1 (a free port) — for notebooks, tests and demos:
    ``srv = BackgroundServer(app).start(); ... srv.url ...; srv.stop()``."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1"):
        with socket.socket() as s:
            s.bind((host, 0))
            self.host, self.port = host, s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="rewardloop-uvicorn", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 30.0) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
