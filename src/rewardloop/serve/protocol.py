"""Request bodies of the OpenAI-compatible endpoints and the feedback API (pydantic: a bad field → 422 naming it).

Unknown parameters are refused rather than ignored (e.g. ``presence_penalty``: rewardloop does not implement it, and
a client should not believe it took effect).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class StreamOptions(Body):
    include_usage: bool = False


class Sampling(Body):
    """Parameters shared by both generation endpoints."""

    model: str
    n: int = Field(1, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = Field(None, max_length=256)
    stream: bool = False
    stream_options: StreamOptions | None = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: str | list[str] | None) -> list[str]:
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("at most 4 non-empty stop strings")
        return stops


class Message(BaseModel):
    """A chat message; content as text or a list of ``{"type": "text", "text": ...}`` parts."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None

    @field_validator("content")
    @classmethod
    def _text_parts(cls, v: Any) -> str:
        if isinstance(v, list):
            if any(p.get("type") != "text" for p in v):
                raise ValueError("only text content parts are supported")
            return "".join(str(p.get("text", "")) for p in v)
        return v or ""


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    max_completion_tokens: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _top_needs_logprobs(self) -> ChatRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self


class CompletionRequest(Sampling):
    prompt: str | list[str]
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: Literal[False] = False
    suffix: None = None

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, v: str | list[str]) -> list[str]:
        prompts = [v] if isinstance(v, str) else v
        if not prompts or any(not p for p in prompts):
            raise ValueError("prompt must be a non-empty string or a non-empty list of non-empty strings")
        return prompts


class FeedbackRequest(Body):
    """One feedback event on a logged response (kinds and values are checked by the store)."""

    response_id: str = Field(min_length=1, max_length=200)
    kind: str = Field(min_length=1, max_length=64)
    idempotency_key: str = Field(min_length=1, max_length=200)
    value: float | None = None
    event: str | None = Field(None, max_length=64)
    other_response_id: str | None = Field(None, max_length=200)
    comment: str | None = Field(None, max_length=10_000)
    user_id: str | None = Field(None, max_length=256)


class FeedbackBatch(Body):
    items: list[FeedbackRequest] = Field(min_length=1, max_length=1000)
