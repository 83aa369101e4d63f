"""Models: loading any HF causal LM, LoRA adapter or tiny preset, the built-in tokenizer, saving with safetensors.

Reward and value models (Hugging Face sequence-classification checkpoints) live in ``models.value_head``.
"""

from rewardloop.models.loading import (
    count_parameters,
    disable_dropout,
    load_model,
    load_pretrained,
    load_tokenizer,
    mixed_precision,
    resolve_device,
    save_model,
)
from rewardloop.models.presets import PRESETS, preset_config
from rewardloop.models.tokenizer import build_tokenizer

__all__ = [
    "PRESETS",
    "build_tokenizer",
    "count_parameters",
    "disable_dropout",
    "load_model",
    "load_pretrained",
    "load_tokenizer",
    "mixed_precision",
    "preset_config",
    "resolve_device",
    "save_model",
]
