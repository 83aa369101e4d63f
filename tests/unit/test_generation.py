"""The generation engine against transformers' own ``generate`` and a teacher-forced forward pass."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from rewardloop.config import GenerationConfig
from rewardloop.rollout import batched_logprobs, generate, sample_next, sequence_logprobs

# Different lengths, so the batch is left-padded (1 to 7 pad tokens).
PROMPTS = ["1+2=", "37+48=", "the product is great", "9"]
GREEDY = GenerationConfig(max_new_tokens=12, temperature=0.0)


def hf_greedy(model, tokenizer, prompts, max_new_tokens, eos_token_id=None) -> list[list[int]]:
    """transformers' greedy continuation of each prompt (left-padded batch), pads after EOS stripped."""
    enc = tokenizer(prompts, padding=True, padding_side="left", return_tensors="pt")
    out = model.generate(
        **enc,
        do_sample=False,
        max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=eos_token_id if eos_token_id is not None else tokenizer.eos_token_id,
    )
    return out[:, enc["input_ids"].shape[1] :].tolist()


def engine_tokens(rollout) -> list[list[int]]:
    """Each row's generated tokens (mask 1), padded with pad id 0 to the batch width like HF's output."""
    width = rollout.response_ids.shape[1]
    rows = []
    for ids, mask in zip(rollout.response_ids.tolist(), rollout.response_mask.tolist(), strict=True):
        real = [t for t, m in zip(ids, mask, strict=True) if m]
        rows.append(real + [0] * (width - len(real)))
    return rows


def tiny_gpt2(tokenizer) -> GPT2LMHeadModel:
    """GPT-2 architecture (learned absolute positions) with large random weights so outputs vary."""
    cfg = GPT2Config(
        vocab_size=len(tokenizer), n_positions=128, n_embd=64, n_layer=2, n_head=2, bos_token_id=1, eos_token_id=2
    )
    torch.manual_seed(0)
    model = GPT2LMHeadModel(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model.eval()


@pytest.fixture(scope="module", params=["llama-1m", "qwen2-1m", "gpt2"])
def any_model(request, tiny_model, tiny_llama, tokenizer):
    if request.param == "llama-1m":
        return tiny_llama
    if request.param == "gpt2":
        return tiny_gpt2(tokenizer)
    return tiny_model(request.param)


def test_greedy_matches_transformers_generate(any_model, tokenizer):
    out = generate(any_model, tokenizer, PROMPTS, GREEDY)
    expected = hf_greedy(any_model, tokenizer, PROMPTS, GREEDY.max_new_tokens)
    assert engine_tokens(out) == expected
    assert len({tuple(r) for r in expected}) == len(PROMPTS)  # the test model's outputs are not degenerate
    lengths = [len(tokenizer(p)["input_ids"]) for p in PROMPTS]
    assert len(set(lengths)) > 1 and out.prompt_mask.sum(1).tolist() == lengths
    assert (out.prompt_mask[:, -1] == 1).all()  # left padding: every prompt ends in the last column
    assert out.prompts == PROMPTS


def test_eos_stops_one_row_and_matches_transformers(tiny_llama, tokenizer, monkeypatch):
    # Declare a token that row 0 emits at step k (and no other row emits) an extra EOS, as a generation config may.
    full = generate(tiny_llama, tokenizer, PROMPTS, GREEDY)
    row0, others = full.response_ids[0].tolist(), full.response_ids[1:].flatten().tolist()
    k = next(k for k in range(2, 10) if row0[k] not in row0[:k] and row0[k] not in others)
    stop_token = row0[k]
    monkeypatch.setattr(tiny_llama.generation_config, "eos_token_id", [tokenizer.eos_token_id, stop_token])

    out = generate(tiny_llama, tokenizer, PROMPTS, GREEDY)
    assert out.response_mask[0].tolist() == [1] * (k + 1) + [0] * (out.response_ids.shape[1] - k - 1)
    assert out.response_ids[0, k].item() == stop_token  # EOS is part of the response (mask 1)
    assert (out.response_ids[0, k + 1 :] == tokenizer.pad_token_id).all()
    assert out.finished.tolist() == [True, False, False, False]
    assert out.response_mask[1:].sum(1).tolist() == [12, 12, 12]  # the other rows go on to max_new_tokens
    assert torch.equal(out.response_ids[1:], full.response_ids[1:])
    expected = hf_greedy(tiny_llama, tokenizer, PROMPTS, 12, eos_token_id=[tokenizer.eos_token_id, stop_token])
    assert engine_tokens(out) == expected


def test_truncated_rows_are_not_finished(tiny_llama, tokenizer):
    out = generate(tiny_llama, tokenizer, PROMPTS, GenerationConfig(max_new_tokens=3, temperature=0.0))
    assert out.response_ids.shape == (4, 3) and out.response_mask.all()
    assert not out.finished.any()


def test_stop_string_stops_the_row_and_is_cut_from_the_text(tiny_llama, tokenizer):
    full = generate(tiny_llama, tokenizer, PROMPTS, GREEDY)
    ids0 = full.response_ids[0].tolist()
    # Stop string: the text of one of row 0's middle tokens (ASCII letters, in no other row's text).
    candidates = [tokenizer.decode(ids0[i : i + 1]).strip() for i in range(2, 12)]
    stop = next(s for s in candidates if s.isascii() and s.isalpha() and all(s not in t for t in full.responses[1:]))
    first = next(n for n in range(1, len(ids0) + 1) if stop in tokenizer.decode(ids0[:n]))

    out = generate(tiny_llama, tokenizer, PROMPTS, GREEDY.model_copy(update={"stop": [stop]}))
    assert out.response_mask[0].sum().item() == first  # stops at the token that completes the stop string
    assert out.response_ids[0, :first].tolist() == ids0[:first]
    assert out.finished.tolist() == [True, False, False, False]
    text0 = tokenizer.decode(ids0, skip_special_tokens=True)
    assert out.responses[0] == text0[: text0.index(stop)]  # the stop string and what follows are cut
    assert stop not in out.responses[0]
    assert out.responses[1:] == full.responses[1:]


@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.3])
def test_logprobs_and_masks_match_teacher_forced_forward(any_model, tokenizer, temperature):
    gen = GenerationConfig(max_new_tokens=10, temperature=temperature)
    eos = tokenizer.eos_token_id
    out = generate(any_model, tokenizer, PROMPTS, gen, generator=torch.Generator().manual_seed(0))
    n = out.response_ids.shape[1]
    # the attention mask covers prompt tokens and generated tokens (up to and including EOS), nothing else
    assert torch.equal(out.attention_mask, torch.cat([out.prompt_mask, out.response_mask], 1))
    for row, length in zip(out.response_ids.tolist(), out.response_lengths.tolist(), strict=True):
        assert eos not in row[: length - 1]  # no EOS before the end of the masked response
    lp, ent = sequence_logprobs(
        any_model, out.input_ids, out.attention_mask, n, temperature=temperature or 1.0, with_entropy=True
    )
    mask = out.response_mask.bool()
    torch.testing.assert_close(lp[mask], out.logprobs[mask], atol=1e-4, rtol=0)
    assert (out.logprobs[~mask] == 0).all()
    assert (ent[mask] > 0).all()
    chunked = batched_logprobs(any_model, out.input_ids, out.attention_mask, n, temperature or 1.0, batch_size=3)
    torch.testing.assert_close(chunked, lp.detach(), atol=1e-5, rtol=0)


def test_top_k_one_and_tiny_top_p_equal_greedy(tiny_llama, tokenizer):
    greedy = generate(tiny_llama, tokenizer, PROMPTS, GREEDY)
    for kwargs in ({"top_k": 1}, {"top_p": 1e-6}):
        gen = GREEDY.model_copy(update={"temperature": 1.0, **kwargs})
        out = generate(tiny_llama, tokenizer, PROMPTS, gen, generator=torch.Generator().manual_seed(1))
        assert torch.equal(out.response_ids, greedy.response_ids), kwargs
        # log-probs are of the full temperature-1 distribution, as with greedy
        torch.testing.assert_close(out.logprobs, greedy.logprobs, atol=1e-5, rtol=0)


def test_seeded_sampling_is_reproducible(tiny_llama, tokenizer):
    gen = GenerationConfig(max_new_tokens=10, temperature=1.0)

    def sample(seed: int):
        return generate(tiny_llama, tokenizer, PROMPTS, gen, generator=torch.Generator().manual_seed(seed))

    a, b, c = sample(0), sample(0), sample(1)
    assert torch.equal(a.response_ids, b.response_ids) and a.responses == b.responses
    assert torch.equal(a.logprobs, b.logprobs)
    assert not torch.equal(a.response_ids, c.response_ids)


def test_sample_next_truncation_and_logprobs():
    # probabilities [0.5, 0.3, 0.2] (temperature 1)
    logits = torch.tensor([0.5, 0.3, 0.2]).log().expand(4000, 3).contiguous()
    gen = torch.Generator().manual_seed(0)
    # top-p 0.6: mass before each token is 0, 0.5, 0.8 → token 2 (0.8 > 0.6) is dropped; sampled 0:1 = 5:3
    tokens, lp = sample_next(logits, GenerationConfig(top_p=0.6), gen)
    assert set(tokens.tolist()) == {0, 1}
    assert abs((tokens == 0).float().mean().item() - 0.625) < 0.03
    # returned log-probs are of the untruncated distribution
    torch.testing.assert_close(lp, torch.tensor([math.log(0.5), math.log(0.3)])[tokens])
    tokens, _ = sample_next(logits, GenerationConfig(top_k=2), gen)
    assert set(tokens.tolist()) == {0, 1}
    # temperature 2: p ∝ √p → [0.7071, 0.5477, 0.4472] / 1.7020
    tokens, lp = sample_next(logits, GenerationConfig(temperature=2.0), gen)
    z = math.sqrt(0.5) + math.sqrt(0.3) + math.sqrt(0.2)
    torch.testing.assert_close(lp, (torch.tensor([0.5, 0.3, 0.2]).sqrt() / z).log()[tokens])
    assert abs((tokens == 2).float().mean().item() - math.sqrt(0.2) / z) < 0.03
    tokens, lp = sample_next(logits[:2], GenerationConfig(temperature=0.0), gen)
    assert tokens.tolist() == [0, 0]
    torch.testing.assert_close(lp, torch.full((2,), math.log(0.5)))


def test_empty_prompt_is_a_clear_error(tiny_llama, tokenizer):
    with pytest.raises(ValueError, match="empty prompt"):
        generate(tiny_llama, tokenizer, ["1+2=", ""], GREEDY)
