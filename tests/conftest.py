"""Shared fixtures: the built-in tokenizer and tiny models with varied ("trained-ish") weights.

Session-scoped objects are shared by every test: never train or mutate them in place — copy first
(``copy.deepcopy(model)``) or use the ``tiny_model`` factory, which builds a fresh model each call.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerFast

from rewardloop.models import build_tokenizer, preset_config

# One intra-op thread: the tiny test models gain little from a second one, and OpenMP threads spin-waiting for a
# core that other processes hold make a busy 2-core machine many times slower (measured under load ≈10:
# tests/unit/test_generation.py took 81 s with 2 threads, 2 s with 1). REWARDLOOP_TEST_THREADS overrides it.
torch.set_num_threads(int(os.environ.get("REWARDLOOP_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    """The project's byte-level BPE tokenizer (``build_tokenizer()``: pad=0, bos=1, eos=2; digits are single tokens).

    Shared: do not add tokens or change its attributes.
    """
    return build_tokenizer()


def _perturb_(model: PreTrainedModel, seed: int, scale: float) -> PreTrainedModel:
    """Add seeded Gaussian noise to every weight so greedy outputs vary (random init repeats one token).

    Keep ``scale`` moderate: logits grow with it, and so does float32 round-off between cached and full forwards.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)
    return model


@pytest.fixture(scope="session")
def tiny_model(tokenizer) -> Callable[..., PreTrainedModel]:
    """Factory ``tiny_model(preset="llama-1m", seed=0, scale=0.2)`` → a fresh preset model in eval mode.

    The weights are the preset's init plus seeded noise of std ``scale``, so different prompts give different,
    non-degenerate greedy continuations. Every call builds a new model: the caller may train or mutate it.
    """

    def make(preset: str = "llama-1m", seed: int = 0, scale: float = 0.2) -> PreTrainedModel:
        config = preset_config(
            preset,
            vocab_size=len(tokenizer),
            max_length=128,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
        return _perturb_(model, seed, scale).eval()

    return make


@pytest.fixture(scope="session")
def tiny_llama(tiny_model) -> PreTrainedModel:
    """A shared llama-1m (eval mode, perturbed weights, seed 0) for read-only use: generation, scoring."""
    return tiny_model("llama-1m")


@pytest.fixture(scope="session")
def sft_arithmetic_careless(tmp_path_factory):
    """An SFT llama-1m (1500 steps, ≈100 s) on 1–2 digit addition whose demonstrations are 70% careless ("85.").

    It has learned the sums but mostly answers in the careless format, which the exact-match reward rejects: the
    starting point for the slow RL tests (PPO, GRPO), where RL must raise held-out test accuracy. Returns the
    saved model directory. Read-only: RL tests load it by path.
    """
    from rewardloop.algorithms.sft import SFTConfig, train
    from rewardloop.config import ModelConfig, RunConfig
    from rewardloop.envs.tasks import TaskConfig

    root = tmp_path_factory.mktemp("sft-careless")
    cfg = SFTConfig(
        model=ModelConfig(preset="llama-1m", device="cpu", max_length=32),
        task=TaskConfig(name="arithmetic", demo_error=0.7),
        steps=1500,
        eval_every=1500,
        run=RunConfig(root=str(root), name="sft", progress=False),
    )
    return train(cfg)["model_dir"]


@pytest.fixture(scope="session")
def live_server_class():
    """``rewardloop.serve.BackgroundServer``: a real uvicorn server for an app on 127.0.0.1 (a free port, a thread)."""
    from rewardloop.serve.background import BackgroundServer

    return BackgroundServer


@pytest.fixture(scope="session")
def sft_reviews(tmp_path_factory) -> str:
    """An SFT model on the reviews task (benchmarks.loop_demo's 300-step recipe; the DPO, KTO and loop slow tests
    start from it)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ sits beside src/, not installed
    from benchmarks.loop_demo import sft_reviews as train_sft

    return train_sft(tmp_path_factory.mktemp("sft-reviews"))
