"""Tiny Qwen2-architecture models saved to a local directory with the project's tokenizer (both sides load them).

Runs in the project's environment (imports rewardloop); TRL workers only read the saved directories.
"""

from __future__ import annotations

from pathlib import Path

import torch


def build_model_dir(preset: str, root: Path, seed: int = 0) -> Path:
    """Save preset ``preset`` (e.g. 'qwen2-4m'), randomly initialised with ``seed``, under ``root/preset``; reused if
    already there."""
    from rewardloop.config import ModelConfig
    from rewardloop.models import load_pretrained, save_model

    target = root / preset
    if (target / "config.json").exists():
        return target
    torch.manual_seed(seed)
    model, tok = load_pretrained(ModelConfig(preset=preset, device="cpu"))
    save_model(model, tok, target)
    return target


def build_score_model_dir(policy_dir: Path, root: Path, name: str, seed: int = 0) -> Path:
    """A sequence-classification model (one output) with the policy's architecture: TRL PPO's value / reward model.

    Saved so that ``AutoModelForSequenceClassification.from_pretrained`` loads it on both sides.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    target = root / name
    if (target / "config.json").exists():
        return target
    torch.manual_seed(seed)
    config = AutoConfig.from_pretrained(policy_dir, num_labels=1)
    model = AutoModelForSequenceClassification.from_config(config)
    model.save_pretrained(target, safe_serialization=True)
    AutoTokenizer.from_pretrained(policy_dir).save_pretrained(target)
    return target


def count_params(model_dir: Path) -> int:
    """Parameters of a saved causal LM (tied embeddings counted once)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    return sum(p.numel() for p in model.parameters())
