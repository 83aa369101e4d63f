"""The continuous feedback loop: read new feedback from the store → train a candidate → evaluate it against the serving
version → promote or reject (``rewardloop loop``); simulated users to drive it. See docs/guides/loop.md."""

from rewardloop.loop.rounds import GateConfig, LoopConfig, run, run_round

__all__ = ["GateConfig", "LoopConfig", "run", "run_round"]
