"""Continuous batching's pure pieces and the engine: a request decodes the same tokens alone and in a batch that
other requests join and leave."""

from __future__ import annotations

import pytest
import torch

from rewardloop.config import GenerationConfig
from rewardloop.rollout import encode_prompts, generate, sample_next
from rewardloop.serve.batching import cut_at_stop, held_back, merge_kv, pad_kv_left, sample_rows, select_kv
from rewardloop.serve.engine import ContinuousBatcher, SamplingParams

PROMPTS = ["1+2=", "37+48=", "the product is great", "9", "a long prompt about many different things"]


def kv_of(rows: list[list[float]]) -> tuple[list, torch.Tensor]:
    """A one-layer cache whose key/value at (row, column) is the number given, [B, 1, L, 1]; mask = value != 0."""
    t = torch.tensor(rows)[:, None, :, None]
    return [(t, t * 10)], (torch.tensor(rows) != 0).long()


def test_pad_merge_select_keep_each_rows_columns_right_aligned():
    a, attn_a = kv_of([[0, 1, 2], [3, 4, 5]])
    b, attn_b = kv_of([[6], [7]])
    kv, attn = merge_kv(a, attn_a, b, attn_b)
    assert kv[0][0][:, 0, :, 0].tolist() == [[0, 1, 2], [3, 4, 5], [0, 0, 6], [0, 0, 7]]
    assert torch.equal(kv[0][1], kv[0][0] * 10)
    assert attn.tolist() == [[0, 1, 1], [1, 1, 1], [0, 0, 1], [0, 0, 1]]
    # the longer side may be the new one
    kv2, attn2 = merge_kv(b, attn_b, a, attn_a)
    assert kv2[0][0][:, 0, :, 0].tolist() == [[0, 0, 6], [0, 0, 7], [0, 1, 2], [3, 4, 5]]
    assert attn2.tolist() == [[0, 0, 1], [0, 0, 1], [0, 1, 1], [1, 1, 1]]
    # dropping row 1 leaves column 0 padding in every kept row: it is trimmed
    kept, attn3 = select_kv(kv, attn, torch.tensor([0, 2, 3]))
    assert kept[0][0][:, 0, :, 0].tolist() == [[1, 2], [0, 6], [0, 7]]
    assert attn3.tolist() == [[1, 1], [0, 1], [0, 1]]
    same, attn4 = pad_kv_left(kept, attn3, 2)
    assert same is kept and attn4 is attn3


def test_sample_rows_greedy_matches_sample_next_and_rows_are_independent():
    torch.manual_seed(0)
    logits = torch.randn(4, 50) * 3
    greedy = GenerationConfig(temperature=0.0)
    ref_tokens, ref_lp = sample_next(logits, greedy, None)
    zeros, ones = torch.zeros(4), torch.ones(4)
    tokens, lp, logp = sample_rows(logits, zeros, ones, torch.zeros(4, dtype=torch.long), torch.rand(4))
    assert torch.equal(tokens, ref_tokens) and torch.allclose(lp, ref_lp)
    assert torch.allclose(logp.exp().sum(-1), ones)
    # a sampled row's token depends only on its own logits, settings and uniform draw
    temp, top_p, top_k, u = (
        torch.tensor([0.7, 0.0, 1.3, 0.9]),
        torch.tensor([0.9, 1, 1, 0.5]),
        torch.zeros(4),
        torch.rand(4),
    )
    batch, _, _ = sample_rows(logits, temp, top_p, top_k.long(), u)
    for i in range(4):
        alone, _, _ = sample_rows(
            logits[i : i + 1], temp[i : i + 1], top_p[i : i + 1], top_k[i : i + 1].long(), u[i : i + 1]
        )
        assert alone.item() == batch[i].item()
    # sampled log-probs are those of the temperature-scaled full distribution, as sample_next reports them
    picked, lp_t, _ = sample_rows(logits, torch.full((4,), 0.7), ones, torch.zeros(4).long(), torch.rand(4))
    assert torch.allclose(lp_t, torch.log_softmax(logits / 0.7, -1).gather(-1, picked[:, None]).squeeze(-1))


def test_sample_rows_inverse_cdf_with_top_p_and_top_k_by_hand():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    one, k0 = torch.ones(1), torch.zeros(1, dtype=torch.long)

    def pick(u, top_p=1.0, top_k=0):
        return sample_rows(logits, one, torch.tensor([top_p]), torch.tensor([top_k]), torch.tensor([u]))[0].item()

    assert [pick(u) for u in (0.0, 0.49, 0.51, 0.79, 0.81, 0.96)] == [0, 0, 1, 1, 2, 3]
    # top_p 0.7 keeps {0.5, 0.3} (0.3 crosses 0.7): mass 0.8, so u=0.7 → 0.56 → token 1, never token 2 or 3
    assert [pick(u, top_p=0.7) for u in (0.6, 0.7, 0.99)] == [0, 1, 1]
    assert [pick(u, top_k=1) for u in (0.0, 0.99)] == [0, 0]
    tokens, lp, _ = sample_rows(logits, one, one, k0, torch.tensor([0.99]))
    assert tokens.item() == 3 and lp.item() == pytest.approx(float(torch.tensor(0.05).log()), abs=1e-6)


def test_held_back_and_cut_at_stop():
    assert held_back("hello wor", ["world"]) == 3
    assert held_back("hello", ["xyz"]) == 0
    assert held_back("ab\ufffd", []) == 1
    assert cut_at_stop("the end. more", ["."]) == ("the end", True)
    assert cut_at_stop("a.b.c", ["."], start=2) == ("a.b", True)
    assert cut_at_stop("abc", ["x"]) == ("abc", False)


def run_alone(model, tokenizer, prompt: str, params: SamplingParams) -> tuple[list[int], list[float]]:
    engine = ContinuousBatcher(model, tokenizer, max_batch=1)
    deltas = []
    engine.submit(encode_prompts(tokenizer, [prompt])[0], params, deltas.append)
    engine.run_until_idle()
    return [d.token_id for d in deltas], [d.logprob for d in deltas]


def run_staggered(model, tokenizer, params_of, joins: dict[int, list[int]], max_batch=8):
    """Submit prompt i at step joins[step]; returns each prompt's (tokens, logprobs)."""
    engine = ContinuousBatcher(model, tokenizer, max_batch=max_batch)
    deltas = {i: [] for i in range(len(PROMPTS))}
    step = 0
    while step < 1000:
        for i in joins.get(step, []):
            engine.submit(encode_prompts(tokenizer, [PROMPTS[i]])[0], params_of(i), deltas[i].append)
        busy = engine.step()
        step += 1
        if not busy and step > max(joins):
            break
    return {i: ([d.token_id for d in ds], [d.logprob for d in ds]) for i, ds in deltas.items()}, engine.stats


# Requests join at steps 0, 0, 3, 5, 9 with different max_tokens: rows leave (length) while others join.
JOINS = {0: [0, 1], 3: [2], 5: [3], 9: [4]}
MAX_TOKENS = [12, 5, 15, 3, 10]


def test_greedy_tokens_identical_alone_and_in_a_changing_batch(tiny_llama, tokenizer):
    def params(i):
        return SamplingParams(max_tokens=MAX_TOKENS[i], temperature=0.0)

    together, stats = run_staggered(tiny_llama, tokenizer, params, JOINS)
    assert stats["max_rows"] >= 3 and stats["prefills"] == 4
    for i, prompt in enumerate(PROMPTS):
        tokens, logprobs = run_alone(tiny_llama, tokenizer, prompt, params(i))
        assert together[i][0] == tokens, f"prompt {i} decoded differently in the batch"
        assert together[i][1] == pytest.approx(logprobs, abs=1e-4)
        # and the same as the training engine's greedy decoding
        ref = generate(tiny_llama, tokenizer, [prompt], GenerationConfig(max_new_tokens=MAX_TOKENS[i], temperature=0))
        assert tokens == ref.response_ids[0][ref.response_mask[0].bool()].tolist()


def test_seeded_sampling_identical_alone_and_in_a_changing_batch(tiny_llama, tokenizer):
    def params(i):
        return SamplingParams(max_tokens=MAX_TOKENS[i], temperature=1.0, top_p=0.9, seed=100 + i)

    together, _ = run_staggered(tiny_llama, tokenizer, params, JOINS)
    for i, prompt in enumerate(PROMPTS):
        assert together[i][0] == run_alone(tiny_llama, tokenizer, prompt, params(i))[0]
    other_seed = SamplingParams(max_tokens=15, temperature=1.0, top_p=0.9, seed=7)
    assert run_alone(tiny_llama, tokenizer, PROMPTS[2], other_seed)[0] != together[2][0]


def test_stop_string_ends_the_row_and_is_not_in_the_text(tiny_llama, tokenizer):
    free = []
    engine = ContinuousBatcher(tiny_llama, tokenizer)
    engine.submit(encode_prompts(tokenizer, [PROMPTS[2]])[0], SamplingParams(max_tokens=20, temperature=0), free.append)
    engine.run_until_idle()
    text = "".join(d.text for d in free)
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    assert len(stop) == 2 and stop in text
    cut = []
    engine.submit(
        encode_prompts(tokenizer, [PROMPTS[2]])[0],
        SamplingParams(max_tokens=20, temperature=0, stop=[stop]),
        cut.append,
    )
    engine.run_until_idle()
    assert "".join(d.text for d in cut) == text[: text.index(stop)]
    assert cut[-1].finish_reason == "stop" and len(cut) < len(free)


def test_cancelled_row_leaves_and_others_continue(tiny_llama, tokenizer):
    engine = ContinuousBatcher(tiny_llama, tokenizer)
    a, b = [], []
    ids = encode_prompts(tokenizer, PROMPTS[:2])
    seq_a = engine.submit(ids[0], SamplingParams(max_tokens=30, temperature=0), a.append)
    engine.submit(ids[1], SamplingParams(max_tokens=6, temperature=0), b.append)
    engine.step()
    seq_a.cancel()
    engine.run_until_idle()
    assert len(a) == 1 and len(b) == 6 and not engine.rows
    assert [d.token_id for d in b] == run_alone(tiny_llama, tokenizer, PROMPTS[1], SamplingParams(6, 0.0))[0]


def test_too_long_request_is_refused(tiny_llama, tokenizer):
    engine = ContinuousBatcher(tiny_llama, tokenizer)
    with pytest.raises(ValueError, match="max_tokens"):
        engine.submit([5] * 10, SamplingParams(max_tokens=10_000), lambda d: None)
