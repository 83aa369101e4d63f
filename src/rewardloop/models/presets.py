"""Tiny Llama / Qwen2 architectures built from a config (≈1M to ≈30M parameters) for CPU training and tests."""

from __future__ import annotations

from transformers import LlamaConfig, PretrainedConfig, Qwen2Config

# name → (hidden, layers, heads, kv_heads, intermediate). Parameter counts are for the default 1024-token vocabulary.
SIZES: dict[str, tuple[int, int, int, int, int]] = {
    "1m": (128, 4, 4, 4, 384),  # ≈0.9M
    "4m": (256, 4, 4, 4, 768),  # ≈3.5M
    "10m": (384, 6, 6, 6, 1024),  # ≈10M
    "30m": (512, 8, 8, 8, 1536),  # ≈28M
}
ARCHS = {"llama": LlamaConfig, "qwen2": Qwen2Config}
PRESETS = [f"{arch}-{size}" for arch in ARCHS for size in SIZES]


def preset_config(name: str, vocab_size: int, max_length: int = 512, **tokens: int) -> PretrainedConfig:
    """A transformers config for preset ``name`` (e.g. 'llama-1m', 'qwen2-30m'); ``tokens`` = pad/bos/eos ids."""
    arch, _, size = name.partition("-")
    if arch not in ARCHS or size not in SIZES:
        raise ValueError(f"unknown model preset {name!r}; allowed: {', '.join(PRESETS)}")
    hidden, layers, heads, kv_heads, inter = SIZES[size]
    return ARCHS[arch](
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=inter,
        max_position_embeddings=max(max_length, 512),
        tie_word_embeddings=True,
        rms_norm_eps=1e-6,
        **tokens,
    )
