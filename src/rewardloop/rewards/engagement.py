"""Engagement events → a scalar reward, for learning from user behaviour (the feedback service and the
personalization environments log events; this turns them into rewards, so rewards stay computable from logs).

An event is ``{"type": "click"}``, ``{"type": "watch_time", "value": 42.0}`` (seconds) or a plain type string;
a sample's events can also be given as counts ``{"click": 1, "like": 1, "watch_time": 42.0}``. The reward is

    r = clip( Σ_e w_type(e) · value(e) , lo, hi ),   value = 1 for discrete events, seconds / <event>_scale for time

with the weights in config (``EngagementWeights``). Timed events (``watch_time``, ``dwell``) are seconds divided by
their ``*_scale``; ``listen_through`` (a track or answer heard to the end) counts once. Unknown event types are
errors (a typo must not silently score 0). ``EngagementWeights.events()`` is the event vocabulary, which the feedback
store validates against.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import Field

from rewardloop.config import Section


class EngagementWeights(Section):
    """Weight of each event type; ``watch_time`` is per ``watch_time_scale`` seconds."""

    click: float = 1.0
    like: float = 2.0
    share: float = 3.0
    comment: float = 1.5
    skip: float = -1.0
    dislike: float = -2.0
    report: float = -5.0
    watch_time: float = 1.0
    dwell: float = Field(0.5, description="time spent on a response (reading), per `dwell_scale` seconds")
    listen_through: float = Field(2.0, description="a track / spoken answer played to the end")
    watch_time_scale: float = Field(60.0, gt=0.0, description="seconds of watch time worth one `watch_time` unit")
    dwell_scale: float = Field(30.0, gt=0.0, description="seconds of dwell worth one `dwell` unit")
    clip: tuple[float, float] | None = Field((-10.0, 10.0), description="clip the sum to [lo, hi] (None = no clip)")

    @classmethod
    def events(cls) -> tuple[str, ...]:
        """The event types (every field but the scales and the clip)."""
        return tuple(k for k in cls.model_fields if k != "clip" and not k.endswith("_scale"))

    @classmethod
    def timed_events(cls) -> tuple[str, ...]:
        """Event types whose value is seconds (each has a ``<event>_scale``)."""
        return tuple(k for k in cls.events() if f"{k}_scale" in cls.model_fields)

    def weight(self, kind: str) -> float:
        if kind not in self.events():
            raise ValueError(f"unknown engagement event type {kind!r}; allowed: {list(self.events())}")
        return getattr(self, kind)

    def scale(self, kind: str) -> float:
        """Seconds worth one unit for a timed event; 1 for a discrete one."""
        return getattr(self, f"{kind}_scale") if kind in self.timed_events() else 1.0


def _pairs(events: Any) -> Iterable[tuple[str, float]]:
    """(type, value) pairs from a list of events or a counts mapping."""
    if events is None:
        return []
    if isinstance(events, Mapping):
        return [(str(k), float(v)) for k, v in events.items()]
    out = []
    for i, ev in enumerate(events):
        if isinstance(ev, str):
            out.append((ev, 1.0))
        elif isinstance(ev, Mapping) and "type" in ev:
            out.append((str(ev["type"]), float(ev.get("value", 1.0))))
        else:
            raise ValueError(f"event {i}: expected a type string or {{'type': ..., 'value': ...}}, got {ev!r}")
    return out


def engagement_score(events: Any, weights: EngagementWeights | None = None) -> float:
    """The scalar reward of one sample's events (see the module docstring)."""
    w = weights or EngagementWeights()
    total = 0.0
    for kind, value in _pairs(events):
        total += w.weight(kind) * value / w.scale(kind)
    if w.clip is not None:
        total = min(max(total, w.clip[0]), w.clip[1])
    return total


def engagement_reward(
    prompts: list[Any], completions: list[Any], *, events: list[Any], weights: dict[str, Any] | None = None, **_: Any
) -> list[float]:
    """RewardFn over an ``events`` column (one list of events or counts mapping per sample); ``weights`` as in
    ``EngagementWeights`` (a dict from a RewardSpec's kwargs)."""
    w = EngagementWeights.model_validate(weights or {})
    return [engagement_score(ev, w) for ev in events]
