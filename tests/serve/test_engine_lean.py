"""The lean decode path (``rollout.engine.LeanDecoder``): a pre-allocated KV cache and a functional one-token step
give the same logits and greedy tokens as the model's own forward with its transformers cache, while rows join
(longer prompts than the running batch has columns), leave (rows from the end fill the holes) and the buffers grow
and drop unused leading columns."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from rewardloop.config import GenerationConfig
from rewardloop.ops import position_ids_from_mask
from rewardloop.rollout import encode_prompts, generate
from rewardloop.rollout.engine import LeanDecoder
from rewardloop.serve.batching import CacheRows, fill_holes
from rewardloop.serve.engine import ContinuousBatcher, SamplingParams, Sequence
from rewardloop.types import pad_left

PROMPTS = ["1+2=", "37+48=", "the product is great", "9", "a long prompt about many different things", "ok"]


def prefill(model, tokenizer, prompts: list[str]):
    """The model's forward over left-padded prompts: (cache, mask [k, P], next positions [k], last logits [k, V])."""
    ids, attn = pad_left(encode_prompts(tokenizer, prompts), tokenizer.pad_token_id)
    positions = position_ids_from_mask(attn)
    out = model(input_ids=ids, attention_mask=attn, position_ids=positions, use_cache=True)
    return out.past_key_values, attn, positions[:, -1] + 1, out.logits[:, -1]


def test_fill_holes_moves_only_rows_from_the_end():
    assert fill_holes(5, [1, 3]) == [0, 4, 2]
    assert fill_holes(4, [3]) == [0, 1, 2]
    assert fill_holes(4, []) == [0, 1, 2, 3]
    assert fill_holes(3, [0, 1, 2]) == []
    assert fill_holes(6, [0, 5]) == [4, 1, 2, 3]


def test_supports_float32_llama_and_qwen2_outside_autocast(tiny_llama, tiny_model, tokenizer):
    assert LeanDecoder.supports(tiny_llama) and LeanDecoder.supports(tiny_model("qwen2-1m"))
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2, n_positions=64))
    assert not LeanDecoder.supports(gpt2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not LeanDecoder.supports(tiny_llama)
    assert not LeanDecoder.supports(tiny_model("llama-1m").to(torch.bfloat16))


class BothPaths:
    """The same rows on ``LeanDecoder`` and on the model's own forward and DynamicCache (``CacheRows``): every step
    checks equal greedy tokens and logits within 1e-4, then feeds both the same tokens."""

    def __init__(self, model, tokenizer, columns: int):
        self.model, self.tokenizer = model, tokenizer
        self.lean = LeanDecoder(model, rows=2, columns=columns)
        self.ref = self.logits_lean = self.logits_ref = None

    def add(self, prompts: list[str]) -> None:
        cache, attn, pos, logits = prefill(self.model, self.tokenizer, prompts)
        self.lean.add_rows(cache, attn, pos)
        cache, attn, pos, logits = prefill(self.model, self.tokenizer, prompts)
        if self.ref is None:
            self.ref, self.logits_lean, self.logits_ref = CacheRows(self.model, cache, attn, pos), logits, logits
        else:
            self.ref.add_rows(cache, attn, pos)
            self.logits_lean = torch.cat([self.logits_lean, logits])
            self.logits_ref = torch.cat([self.logits_ref, logits])

    def step(self, times: int = 1) -> None:
        for _ in range(times):
            lean, ref = self.logits_lean, self.logits_ref
            assert torch.equal(lean.argmax(-1), ref.argmax(-1))
            assert torch.allclose(lean, ref, atol=1e-4), (lean - ref).abs().max()
            tokens = ref.argmax(-1)
            self.logits_lean, self.logits_ref = self.lean.step(tokens), self.ref.step(tokens)

    def drop(self, rows: list[int]) -> None:
        order = fill_holes(len(self.logits_ref), rows)
        self.lean.keep_rows(order)
        self.ref.keep_rows(order)
        self.logits_lean, self.logits_ref = self.logits_lean[order], self.logits_ref[order]


@pytest.mark.parametrize("preset", ["llama-1m", "qwen2-1m"])
@torch.inference_mode()
def test_lean_steps_equal_the_models_own_cache_as_rows_join_and_leave(preset, tiny_model, tokenizer):
    both = BothPaths(tiny_model(preset, seed=3), tokenizer, columns=4)  # 4 columns and 2 rows: the buffers must grow
    lean = both.lean
    both.add(PROMPTS[:3])
    both.step(3)
    both.add([PROMPTS[4]])  # a prompt longer than the columns written so far: the running rows shift right
    both.step(2)
    both.drop([0, 2])
    both.step(2)
    both.add([PROMPTS[3], PROMPTS[5]])  # short prompts join right-aligned at the write column
    both.step(3)
    columns = lean.k[0].shape[2]
    both.drop([0, 1])  # the two oldest rows leave: the leading columns nobody uses are dropped
    assert lean.k[0].shape[2] == columns and lean.c < columns and min(lean.start) == 0
    both.step(columns - lean.c + 1)  # and the buffers grow again
    assert lean.k[0].shape[2] > columns
    both.step(1)


@torch.inference_mode()
def test_lean_step_attends_past_leading_columns_no_row_uses(tiny_llama, tokenizer):
    both = BothPaths(tiny_llama, tokenizer, columns=256)  # room enough that nothing is trimmed
    both.add([PROMPTS[4]])
    both.step(3)
    both.add(PROMPTS[:2])  # short prompts: their first columns are far right of column 0
    both.step(2)
    both.drop([0])  # the long row leaves; the columns before the short rows stay allocated but unused
    assert min(both.lean.start) > 0 and both.lean.k[0].shape[2] == 256
    both.step(6)


def staggered(model, tokenizer, lean: bool, params) -> dict[int, list[int]]:
    """Requests join at steps 0, 0, 2, 4, 6 with different max_tokens; the engine on either decode path."""
    engine = ContinuousBatcher(model, tokenizer, max_batch=4)
    engine._lean = lean
    joins, out = {0: [0, 1], 2: [2], 4: [3], 6: [4, 5]}, {i: [] for i in range(len(PROMPTS))}
    for step in range(200):
        for i in joins.get(step, []):
            engine.submit(encode_prompts(tokenizer, [PROMPTS[i]])[0], params(i), out[i].append)
        if step == 1:
            assert isinstance(engine._decoder, LeanDecoder if lean else CacheRows)
        if not engine.step() and step > 6:
            break
    return {i: [d.token_id for d in ds] for i, ds in out.items()}


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_engine_decodes_the_same_tokens_on_the_lean_and_the_cache_path(tiny_llama, tokenizer, temperature):
    def params(i):
        return SamplingParams(max_tokens=[9, 4, 12, 3, 8, 6][i], temperature=temperature, seed=10 + i)

    lean, ref = staggered(tiny_llama, tokenizer, True, params), staggered(tiny_llama, tokenizer, False, params)
    assert lean == ref
    assert [len(t) for t in lean.values()] == [9, 4, 12, 3, 8, 6]


def test_incremental_text_equals_decoding_every_token_again(tiny_llama, tokenizer):
    """The engine decodes only the tokens after the last complete character; the text must equal a full decode at
    every step, through special tokens, characters split across tokens and invalid byte sequences."""
    engine = ContinuousBatcher(tiny_llama, tokenizer)
    assert engine._tail_decode is not None  # the project's byte-level tokenizer takes the incremental path
    gen = random.Random(0)
    wide = tokenizer("日本語 ✓ héllo", add_special_tokens=False)["input_ids"]
    sequences = [wide + wide] + [[gen.randrange(len(tokenizer)) for _ in range(40)] for _ in range(20)]
    held = 0
    for ids in sequences:
        seq = Sequence([1], SamplingParams(), lambda d: None)
        for token in ids:
            seq.token_ids.append(token)
            text = engine._text(seq)
            assert text == tokenizer.decode(seq.token_ids, skip_special_tokens=True)
            held += seq.decoded < len(seq.token_ids)
    assert held  # some step did end inside a character


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_rollout_generate_is_the_same_on_the_lean_and_the_cache_path(tiny_llama, tokenizer, monkeypatch, temperature):
    """rollout.generate (every RL trainer's sampler) through LeanDecoder and through the model's own cache: the same
    tokens, masks and log-probs, with rows leaving the batch early at a stop string."""
    gen = GenerationConfig(max_new_tokens=16, temperature=temperature, stop=["e"])

    def run():
        return generate(tiny_llama, tokenizer, PROMPTS, gen, generator=torch.Generator().manual_seed(5))

    lean = run()
    monkeypatch.setattr(LeanDecoder, "supports", classmethod(lambda cls, model: False))
    ref = run()
    lengths = lean.response_mask.sum(1)
    assert lengths.min() < lengths.max()  # some rows stopped early: the batch was compacted
    assert torch.equal(lean.response_ids, ref.response_ids) and torch.equal(lean.response_mask, ref.response_mask)
    assert torch.allclose(lean.logprobs, ref.logprobs, atol=1e-4)
    assert lean.responses == ref.responses
