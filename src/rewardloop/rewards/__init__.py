"""Reward functions: built-ins by name, plug-ins by dotted/file path, safe scoring, composites, engagement.

A reward function is ``reward(prompts, completions, **columns) -> list[float]``; see docs/guides/rewards.md.
"""

from rewardloop.rewards.builtin import (
    exact_answer,
    exact_match,
    length_penalty,
    numeric_closeness,
    numeric_match,
    regex_format,
    repetition_penalty,
    reward_model,
)
from rewardloop.rewards.composite import RewardSection, RewardSet, RewardSpec, build_rewards, weighted_sum
from rewardloop.rewards.engagement import EngagementWeights, engagement_reward, engagement_score
from rewardloop.rewards.model import RewardModelScorer
from rewardloop.rewards.registry import BUILTIN_REWARDS, RewardFn, register_reward, resolve_reward
from rewardloop.rewards.scoring import RewardError, RewardTimeout, ScoredBatch, score_completions, with_timeout

__all__ = [
    "BUILTIN_REWARDS",
    "EngagementWeights",
    "RewardError",
    "RewardFn",
    "RewardModelScorer",
    "RewardSection",
    "RewardSet",
    "RewardSpec",
    "RewardTimeout",
    "ScoredBatch",
    "build_rewards",
    "engagement_reward",
    "engagement_score",
    "exact_answer",
    "exact_match",
    "length_penalty",
    "numeric_closeness",
    "numeric_match",
    "regex_format",
    "register_reward",
    "repetition_penalty",
    "resolve_reward",
    "reward_model",
    "score_completions",
    "weighted_sum",
    "with_timeout",
]
