"""Models: loading any HF causal LM or a tiny preset, the built-in tokenizer, saving with safetensors."""

from rewardloop.models.loading import (
    count_parameters,
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
    "load_model",
    "load_pretrained",
    "load_tokenizer",
    "mixed_precision",
    "preset_config",
    "resolve_device",
    "save_model",
]
