"""``run.rollout_backend: vllm`` — vLLM as the Ray rollout workers' sampler (optional; GPU workers; issue 13 item 5).

The worker keeps the same collect path (``rollout.collect``: expand rows × G, per-row seeds, group ids, scoring) and
only swaps the sampler: ``VLLMSampler`` has ``rollout.engine.generate``'s signature and returns a ``Rollout`` whose
``logprobs`` are vLLM's log-probs of the sampled tokens (``logprobs_mode="processed_logprobs"``: after temperature —
the same π_old the built-in engine stores when top-k / top-p are off). After each update the worker loads the
broadcast weights into the engine's model (``LLM.apply_model`` → ``model.load_weights``).

vllm is imported lazily (only inside the worker that samples with it): it is not a dependency of rewardloop.
Not run on a GPU here (the development machine has none and vllm does not install on it) — ``to_rollout`` is tested
with stand-ins for vLLM's output objects; see docs/guides/distributed.md.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from typing import Any

import torch

from rewardloop.config import GenerationConfig
from rewardloop.rollout.engine import encode_prompts
from rewardloop.types import Rollout, pad_left


def require_vllm():
    """The ``vllm`` module, or an error that names the missing package and the way out."""
    try:
        import vllm
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            f"run.rollout_backend='vllm' needs the vllm package, which is not installed here ({e}); install it in "
            "the GPU workers' image (pip install vllm) or use run.rollout_backend=hf"
        ) from e
    return vllm


def to_rollout(outputs: Sequence[Any], prompts: list[Any], pad_id: int, max_new_tokens: int) -> Rollout:
    """vLLM ``RequestOutput``s (one completion each) → a ``Rollout`` on CPU.

    Per output o, completion c = o.outputs[0]: prompt ids ``o.prompt_token_ids`` (left-padded, [B, P]); response ids
    ``c.token_ids`` right-padded to ``max_new_tokens`` ([B, T]), mask 1 on each generated token; ``logprobs[b, t]`` =
    ``c.logprobs[t][token_t].logprob`` (the sampled token's entry of vLLM's per-step dict); finished = the engine
    stopped on EOS or a stop string (``finish_reason == "stop"``), not on the length limit; text ``c.text``."""
    B, T = len(outputs), max_new_tokens
    prompt_ids, prompt_mask = pad_left([list(o.prompt_token_ids) for o in outputs], pad_id)
    response_ids = torch.full((B, T), pad_id, dtype=torch.long)
    response_mask = torch.zeros((B, T), dtype=torch.long)
    logprobs = torch.zeros((B, T), dtype=torch.float32)
    finished = torch.zeros(B, dtype=torch.bool)
    for b, o in enumerate(outputs):
        c = o.outputs[0]
        ids = list(c.token_ids)[:T]
        if c.logprobs is None or len(c.logprobs) < len(ids):
            raise ValueError(f"vLLM output {b}: no sampled-token log-probs (SamplingParams(logprobs=0) was not set)")
        n = len(ids)
        response_ids[b, :n] = torch.tensor(ids, dtype=torch.long)
        response_mask[b, :n] = 1
        logprobs[b, :n] = torch.tensor([step[t].logprob for step, t in zip(c.logprobs, ids, strict=False)])
        finished[b] = c.finish_reason == "stop"
    responses = [o.outputs[0].text for o in outputs]
    return Rollout(prompt_ids, prompt_mask, response_ids, response_mask, logprobs, finished, list(prompts), responses)


def sampling_params(vllm, gen: GenerationConfig, seeds: list[int | None]) -> list[Any]:
    """One ``SamplingParams`` per row: the run's temperature / top-k / top-p / stop strings, the row's seed, and the
    sampled token's log-prob (``logprobs=0``)."""
    fixed = {
        "n": 1, "temperature": gen.temperature, "top_k": gen.top_k or -1, "top_p": gen.top_p,
        "max_tokens": gen.max_new_tokens, "stop": list(gen.stop), "logprobs": 0,
    }  # fmt: skip
    return [vllm.SamplingParams(**fixed, seed=seed) for seed in seeds]


class VLLMSampler:
    """``rollout.engine.generate`` backed by a vLLM engine on this worker's GPU; ``load`` syncs updated weights.

    The engine starts from ``model`` saved to a temporary directory (vLLM loads models by path). LoRA policies are
    not supported (the broadcast sends adapter matrices; vLLM's ``load_weights`` takes full checkpoint names)."""

    def __init__(self, model, tokenizer, gpu_memory_utilization: float = 0.5):
        vllm = require_vllm()
        if any("lora_" in name for name, _ in model.named_parameters()):
            raise ValueError("run.rollout_backend='vllm' does not take LoRA policies yet; use run.rollout_backend=hf")
        os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")  # apply_model sends a function to the engine
        self.vllm, self.pad_id = vllm, tokenizer.pad_token_id
        self.path = tempfile.mkdtemp(prefix="rewardloop-vllm-")
        model.save_pretrained(self.path)
        tokenizer.save_pretrained(self.path)
        self.llm = vllm.LLM(
            model=self.path, logprobs_mode="processed_logprobs", gpu_memory_utilization=gpu_memory_utilization
        )

    def load(self, weights: dict[str, torch.Tensor]) -> None:
        """Copy the broadcast weights (HF parameter names) into the engine's model; drop cached prefixes."""
        items = list(weights.items())
        self.llm.apply_model(lambda m: m.load_weights(items))
        self.llm.reset_prefix_cache()

    def __call__(
        self, model, tokenizer, prompts: list[Any], gen: GenerationConfig, *, generator=None,
        prompt_token_ids: list[list[int]] | None = None, row_seeds: list[int] | None = None,
    ) -> Rollout:  # fmt: skip
        """Sample one response per prompt with vLLM (``model`` is unused: the engine holds the weights)."""
        ids = prompt_token_ids if prompt_token_ids is not None else encode_prompts(tokenizer, prompts)
        seeds: list[int | None] = list(row_seeds) if row_seeds is not None else [None] * len(ids)
        requests = [{"prompt_token_ids": x} for x in ids]
        outputs = self.llm.generate(requests, sampling_params(self.vllm, gen, seeds), use_tqdm=False)
        return to_rollout(outputs, prompts, self.pad_id, gen.max_new_tokens)
