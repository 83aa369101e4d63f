"""rewardloop: reinforcement learning from reward feedback for language models — readable, CPU first.

Algorithms live one per module (``rewardloop.algorithms.sft | reward_model | ppo | grpo | dpo``), each with a
``Config`` class and ``train(cfg)``; the pieces below are the shared building blocks.
"""

from rewardloop.config import GenerationConfig, ModelConfig, OptimConfig, RunConfig, load_config
from rewardloop.envs import DatasetEnv, Environment, TaskConfig, load_task
from rewardloop.models import build_tokenizer, load_pretrained, save_model
from rewardloop.rewards.registry import resolve_reward
from rewardloop.rollout import generate
from rewardloop.rollout.collect import collect
from rewardloop.runs import RunDir
from rewardloop.types import Rollout

__version__ = "0.1.0"
__all__ = [
    "DatasetEnv",
    "Environment",
    "GenerationConfig",
    "ModelConfig",
    "OptimConfig",
    "Rollout",
    "RunConfig",
    "RunDir",
    "TaskConfig",
    "build_tokenizer",
    "collect",
    "generate",
    "load_config",
    "load_pretrained",
    "load_task",
    "resolve_reward",
    "save_model",
]
