"""The optional vLLM sampler (``run.rollout_backend: vllm``, distributed/vllm_backend.py).

Here (no GPU, no vllm) the conversion of vLLM's output objects into a ``Rollout`` is tested with plain dataclasses
standing in for them, and the sampler's path through ``collect`` with a stand-in engine; the test against a real
vLLM engine runs only where vllm and CUDA are present.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
import torch

from rewardloop.config import GenerationConfig, ModelConfig, RunConfig
from rewardloop.distributed.collector import RayCollector
from rewardloop.distributed.vllm_backend import VLLMSampler, require_vllm, to_rollout
from rewardloop.rewards.composite import RewardSet
from rewardloop.rollout import batched_logprobs
from rewardloop.rollout.collect import collect

HAS_VLLM = importlib.util.find_spec("vllm") is not None


@dataclass
class Logprob:  # vllm.sequence.Logprob
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:  # vllm.outputs.CompletionOutput
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None = None


@dataclass
class RequestOutput:  # vllm.outputs.RequestOutput
    request_id: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput] = field(default_factory=list)


def completion(ids: list[int], lps: list[float], finish: str, text: str) -> CompletionOutput:
    # vLLM's per-step dict holds the sampled token and the top-k (here a more likely token 99 that was not sampled)
    steps = [{t: Logprob(lp, rank=2), 99: Logprob(-0.01, rank=1)} for t, lp in zip(ids, lps, strict=True)]
    return CompletionOutput(0, text, ids, sum(lps), steps, finish)


def test_vllm_outputs_become_a_rollout():
    outs = [
        RequestOutput("0", [1, 5, 6], [completion([7, 8, 2], [-0.5, -1.0, -0.25], "stop", "ab")]),
        RequestOutput("1", [1, 9], [completion([4, 4, 4, 4], [-2.0, -0.1, -0.2, -0.3], "length", "cccc")]),
    ]
    ro = to_rollout(outs, ["p0", "p1"], pad_id=0, max_new_tokens=4)
    assert ro.prompt_ids.tolist() == [[1, 5, 6], [0, 1, 9]] and ro.prompt_mask.tolist() == [[1, 1, 1], [0, 1, 1]]
    assert ro.response_ids.tolist() == [[7, 8, 2, 0], [4, 4, 4, 4]]
    assert ro.response_mask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    want = torch.tensor([[-0.5, -1.0, -0.25, 0.0], [-2.0, -0.1, -0.2, -0.3]])
    torch.testing.assert_close(ro.logprobs, want)  # the sampled token's entry, not the top-1's
    assert ro.finished.tolist() == [True, False]
    assert ro.responses == ["ab", "cccc"] and ro.prompts == ["p0", "p1"]


def test_vllm_outputs_without_logprobs_are_refused():
    out = RequestOutput("0", [1], [CompletionOutput(0, "a", [7], None, None, "stop")])
    with pytest.raises(ValueError, match=r"vLLM output 0: no sampled-token log-probs"):
        to_rollout([out], ["p"], pad_id=0, max_new_tokens=2)


class StandInEngine:
    """Answers every request with tokens [3 + seed % 5, eos] and log-probs -1 / -2; records the sampling params."""

    def __init__(self, eos: int):
        self.eos, self.params = eos, []

    def generate(self, requests, params, use_tqdm=False):
        self.params += params
        return [
            RequestOutput(str(i), r["prompt_token_ids"], [completion([3 + p["seed"] % 5, self.eos], [-1.0, -2.0], "stop", "x")])
            for i, (r, p) in enumerate(zip(requests, params, strict=True))
        ]  # fmt: skip


def test_the_vllm_sampler_goes_through_collect(tiny_model, tokenizer):
    sampler = object.__new__(VLLMSampler)  # the engine replaced by a stand-in: no vllm here
    sampler.vllm, sampler.pad_id = SimpleNamespace(SamplingParams=dict), tokenizer.pad_token_id
    sampler.llm = StandInEngine(tokenizer.eos_token_id)
    gen = GenerationConfig(max_new_tokens=3, temperature=0.7, top_p=0.9, stop=["\n"])
    rs = RewardSet({"len": lambda prompts, completions, **_: [float(len(c)) for c in completions]}, {"len": 1.0})
    rows = [{"prompt": "1+1="}, {"prompt": "2+2="}]
    ro = collect(
        tiny_model(), tokenizer, rows, gen, rs, samples_per_prompt=2, group_start=4, row_seed=0, sample=sampler
    )
    assert ro.group_ids.tolist() == [4, 4, 5, 5] and ro.rewards.tolist() == [1.0] * 4
    assert ro.logprobs[:, :2].tolist() == [[-1.0, -2.0]] * 4 and ro.response_mask.sum().item() == 8
    p = sampler.llm.params[0]
    assert (p["temperature"], p["top_p"], p["top_k"], p["max_tokens"], p["stop"], p["logprobs"]) == (
        0.7, 0.9, -1, 3, ["\n"], 0,
    )  # fmt: skip
    assert len({q["seed"] for q in sampler.llm.params}) == 4  # each row its own seed (per-row seeded sampling)


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed here")
def test_selecting_vllm_without_it_names_the_missing_package(tiny_model, tokenizer):
    with pytest.raises(ModuleNotFoundError, match=r"rollout_backend='vllm' needs the vllm package.*pip install vllm"):
        require_vllm()
    with pytest.raises(ModuleNotFoundError, match="needs the vllm package"):
        VLLMSampler(tiny_model(), tokenizer)


def test_vllm_refuses_environments_before_starting_ray(tiny_model, tokenizer):
    run = RunConfig(backend="ray", rollout_backend="vllm")
    with pytest.raises(ValueError, match=r"environments .* need rollout_backend=hf"):
        RayCollector(run, ModelConfig(), tiny_model(), tokenizer, RewardSet({}, {}), lambda seed: None)


def test_vllm_sampler_logprobs_match_a_teacher_forced_pass(tiny_model, tokenizer, tmp_path):
    """On a GPU with vllm: the engine's sampled-token log-probs are π(a_t|s_t) at the temperature (1e-3)."""
    pytest.importorskip("vllm")
    if not torch.cuda.is_available():
        pytest.skip("vLLM needs a GPU")
    model = tiny_model().to("cuda")
    sampler = VLLMSampler(model, tokenizer, gpu_memory_utilization=0.2)
    gen = GenerationConfig(max_new_tokens=6, temperature=0.8)
    ro = sampler(model, tokenizer, ["1+2=", "3+4="], gen, row_seeds=[1, 2]).to("cuda")
    T = ro.response_ids.shape[1]
    ref = batched_logprobs(model, ro.input_ids, ro.attention_mask, T, gen.temperature)
    torch.testing.assert_close(ro.logprobs * ro.response_mask, ref * ro.response_mask, atol=1e-3, rtol=1e-3)
