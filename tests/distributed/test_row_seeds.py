"""Per-row seeded sampling (rollout.engine ``row_seeds``): a row samples the same tokens alone, in any batch, in any
order — what lets a batch split over Ray workers equal a local run (issue 13 item 2)."""

from __future__ import annotations

import torch

from rewardloop.config import GenerationConfig
from rewardloop.rollout import generate
from rewardloop.rollout.collect import collect
from rewardloop.rollout.engine import derive_seed

GEN = GenerationConfig(max_new_tokens=8, temperature=1.0, top_p=0.9)
PROMPTS = ["1+2=", "33+44=", "5+6=", "7+18=", "2+2="]


def test_a_row_samples_the_same_alone_or_in_any_batch(tiny_llama, tokenizer):
    seeds = [derive_seed(3, g) for g in range(len(PROMPTS))]
    batch = generate(tiny_llama, tokenizer, PROMPTS, GEN, row_seeds=seeds)
    order = [3, 0, 4, 2, 1]
    shuffled = generate(tiny_llama, tokenizer, [PROMPTS[i] for i in order], GEN, row_seeds=[seeds[i] for i in order])
    assert [shuffled.responses[order.index(i)] for i in range(len(PROMPTS))] == batch.responses
    for i, prompt in enumerate(PROMPTS):
        alone = generate(tiny_llama, tokenizer, [prompt], GEN, row_seeds=[seeds[i]])
        assert alone.responses == [batch.responses[i]]
        n = int(alone.response_mask.sum())
        torch.testing.assert_close(alone.logprobs[0, :n], batch.logprobs[i, :n], atol=1e-5, rtol=1e-5)
    other = generate(tiny_llama, tokenizer, PROMPTS, GEN, row_seeds=[derive_seed(4, g) for g in range(len(PROMPTS))])
    assert other.responses != batch.responses  # the seed matters


def test_row_seeded_collect_is_independent_of_the_split(tiny_llama, tokenizer):
    rows = [{"prompt": p} for p in PROMPTS]
    whole = collect(tiny_llama, tokenizer, rows, GEN, None, samples_per_prompt=3, row_seed=9)
    head = collect(tiny_llama, tokenizer, rows[:2], GEN, None, samples_per_prompt=3, row_seed=9)
    tail = collect(tiny_llama, tokenizer, rows[2:], GEN, None, samples_per_prompt=3, group_start=2, row_seed=9)
    assert head.responses + tail.responses == whole.responses
    assert len(set(whole.responses)) > 3  # the G samples of a prompt differ: each has its own stream


def test_row_seeded_sampling_follows_the_distribution():
    from rewardloop.rollout.engine import row_uniforms, sample_next

    logits = torch.log(torch.tensor([[0.1, 0.6, 0.3]])).repeat(4000, 1)  # [B, V]
    u = row_uniforms(list(range(4000)), 1, "cpu")[:, 0]
    tokens, logp = sample_next(logits, GenerationConfig(temperature=1.0), None, u)
    freq = torch.bincount(tokens, minlength=3).float() / 4000
    torch.testing.assert_close(freq, torch.tensor([0.1, 0.6, 0.3]), atol=0.03, rtol=0)
    torch.testing.assert_close(logp, torch.log(torch.tensor([0.1, 0.6, 0.3]))[tokens])
    filtered, _ = sample_next(logits, GenerationConfig(temperature=1.0, top_k=1), None, u)
    assert (filtered == 1).all()  # truncation still applies
