"""Environments: the Environment protocol, built-in tasks (arithmetic, reviews, code) and the dataset adapter."""

from rewardloop.envs.arithmetic import ArithmeticEnv, make_arithmetic_splits
from rewardloop.envs.base import DatasetEnv, Environment, Example, Observation
from rewardloop.envs.tasks import Task, TaskConfig, load_task
from rewardloop.rewards.builtin import exact_match  # the arithmetic task's reward, kept importable from here

__all__ = [
    "ArithmeticEnv",
    "DatasetEnv",
    "Environment",
    "Example",
    "Observation",
    "Task",
    "TaskConfig",
    "exact_match",
    "load_task",
    "make_arithmetic_splits",
]
