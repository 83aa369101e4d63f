"""``rewardloop serve`` settings: the model, default sampling, the HTTP server and the interaction store."""

from __future__ import annotations

from pydantic import Field

from rewardloop.config import GenerationConfig, ModelConfig, Section


class ServerSection(Section):
    """The HTTP server and the continuous-batching engine."""

    host: str = Field("127.0.0.1", description="bind address; loopback by default (0.0.0.0 exposes the server)")
    port: int = Field(8000, ge=0, le=65535, description="0 = any free port")
    max_batch: int = Field(32, ge=1, description="most rows (requests × n) in one decode step")
    max_new_tokens: int = Field(256, ge=1, description="cap on a request's max_tokens (larger values are clamped)")
    max_n: int = Field(16, ge=1, description="most choices one request may ask for (n)")
    model_name: str | None = Field(None, description="the name clients pass as `model`; default: model.path or preset")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="larger request bodies get 413")
    log_level: str = "info"
    auth: bool = Field(
        False,
        description="require an API key (`rewardloop keys create`) on every route but /health; needed to bind a "
        "non-loopback host",
    )
    follow_registry: bool = Field(
        False, description="serve the store registry's `serving` version and swap when `rewardloop loop` promotes one"
    )
    registry_poll_seconds: float = Field(2.0, gt=0, description="how often a following server checks the registry")
    annotate_overlap: int = Field(2, ge=1, description="labels wanted per annotation item (overlap gives Cohen's κ)")


class StoreSection(Section):
    """Where interactions and feedback are written (rewardloop.store)."""

    url: str = Field(
        "sqlite:///rewardloop.db", description="SQLAlchemy URL: sqlite:///file.db or postgresql+psycopg://…"
    )


class ServeConfig(Section):
    """``rewardloop serve``: an OpenAI-compatible server that logs every interaction (docs/guides/serving.md)."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    gen: GenerationConfig = Field(
        default_factory=lambda: GenerationConfig(max_new_tokens=64, temperature=1.0),
        description="defaults for parameters a request leaves out (max_tokens, temperature, top_p, top_k, stop)",
    )
    serve: ServerSection = Field(default_factory=ServerSection)
    store: StoreSection = Field(default_factory=StoreSection)

    def model_name(self) -> str:
        return self.serve.model_name or self.model.path or self.model.preset
