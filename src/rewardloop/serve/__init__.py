"""OpenAI-compatible serving with continuous batching, logging every interaction to the store, and the feedback API.

The only package importing fastapi / uvicorn (``pip install 'rewardloop[serve]'``); ``ServeConfig`` imports without
them, so ``rewardloop config serve`` works everywhere. Guide: docs/guides/serving.md.
"""

from __future__ import annotations

from typing import Any

from rewardloop.serve.config import ServeConfig

__all__ = ["ServeConfig", "create_app", "serve"]


def __getattr__(name: str) -> Any:
    if name in ("create_app", "serve"):  # imported on first use: they need fastapi
        from rewardloop.serve import app

        return getattr(app, name)
    raise AttributeError(f"module 'rewardloop.serve' has no attribute {name!r}")
