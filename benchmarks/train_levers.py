"""Experiment: what one training update (forward + backward + AdamW step) costs under each speed/memory lever.

    python -m benchmarks.train_levers [MODEL ...]      # default: qwen2-4m qwen2-30m (saved under benchmarks/out/models)

64 sequences × 38 tokens, log-probs of the last 32 (a GRPO update's shape in table (b)), one thread, CPU seconds
(``time.process_time``), three updates per setting (the first includes warm-up). Settings: fp32; fp32 with fused
AdamW; bf16 autocast of the forward (``rewardloop.models.mixed_precision``); fp32 with activation checkpointing.
The evidence behind the levers adopted or left out in docs/benchmarks.md; not a code path the library uses.
"""

from __future__ import annotations

import sys
import time

import torch
from transformers import AutoModelForCausalLM

from benchmarks.run_all import BENCH
from rewardloop.config import ModelConfig
from rewardloop.models import mixed_precision
from rewardloop.models.loading import enable_checkpointing
from rewardloop.rollout.scoring import sequence_logprobs

B, L, R = 64, 38, 32
SETTINGS = {  # name: (AdamW kwargs, autocast, checkpointing)
    "fp32": ({}, "off", False),
    "fp32, fused AdamW": ({"fused": True}, "off", False),
    "bf16 autocast": ({}, "bfloat16", False),
    "fp32, checkpointing": ({}, "off", True),
}


def update_seconds(model, opt, ids, autocast: str) -> float:
    mask = torch.ones_like(ids)
    t0 = time.process_time()
    with mixed_precision(ModelConfig(autocast=autocast), ids.device):
        logp, _ = sequence_logprobs(model, ids, mask, R)
    logp.mean().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.process_time() - t0


def main(names: list[str]) -> None:
    torch.set_num_threads(1)
    for name in names:
        for setting, (adam, autocast, checkpointing) in SETTINGS.items():
            model = AutoModelForCausalLM.from_pretrained(BENCH / "out" / "models" / name).train()
            if checkpointing:
                enable_checkpointing(model)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-5, **adam)
            ids = torch.randint(3, model.config.vocab_size, (B, L), generator=torch.Generator().manual_seed(0))
            times = [update_seconds(model, opt, ids, autocast) for _ in range(3)]
            print(f"{name:10s} {setting:22s} " + " ".join(f"{t:.2f}" for t in times) + " s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["qwen2-4m", "qwen2-30m"])
