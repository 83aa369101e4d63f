"""``model.disable_dropout``: train-mode log-probs equal the sampler's (eval-mode) ones, as RL's ratios assume."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from rewardloop.algorithms.sft import SFTConfig
from rewardloop.config import GenerationConfig, ModelConfig
from rewardloop.models import disable_dropout, load_pretrained, save_model
from rewardloop.rollout import generate, sequence_logprobs

PROMPTS = ["1+2=", "37+48=", "the product is great", "9"]


@pytest.fixture
def gpt2_dir(tmp_path, tokenizer):
    """A tiny GPT-2 with every dropout rate at 0.1, saved with the project's tokenizer."""
    config = GPT2Config(
        n_layer=2, n_embd=32, n_head=2, n_positions=64, vocab_size=len(tokenizer),
        resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1, summary_first_dropout=0.1,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(tmp_path / "gpt2")
    tokenizer.save_pretrained(tmp_path / "gpt2")
    return tmp_path / "gpt2"


def train_mode_logprob_gap(model, tok) -> float:
    """max |log π_train − log π_sampler| over the sampled response tokens."""
    gen = torch.Generator().manual_seed(0)
    ro = generate(model, tok, PROMPTS, GenerationConfig(max_new_tokens=8), generator=gen)  # eval mode inside
    model.train()
    torch.manual_seed(0)
    with torch.no_grad():
        logp, _ = sequence_logprobs(model, ro.input_ids, ro.attention_mask, ro.response_ids.shape[1])
    real = ro.response_mask.bool()
    assert real.sum() > 4
    return float((logp - ro.logprobs)[real].abs().max())


def test_rl_default_disables_dropout_so_train_mode_logprobs_match_sampling(gpt2_dir, tmp_path):
    model, tok = load_pretrained(ModelConfig(path=str(gpt2_dir), device="cpu", max_length=64))
    assert train_mode_logprob_gap(model, tok) < 1e-5
    saved = json.loads((save_model(model, tok, tmp_path / "resaved") / "config.json").read_text())
    assert saved["resid_pdrop"] == saved["embd_pdrop"] == saved["attn_pdrop"] == 0.0  # re-saved models keep it off


def test_with_dropout_kept_train_mode_logprobs_differ(gpt2_dir):
    model, tok = load_pretrained(ModelConfig(path=str(gpt2_dir), device="cpu", max_length=64, disable_dropout=False))
    assert train_mode_logprob_gap(model, tok) > 1e-3
    assert SFTConfig().model.disable_dropout is False  # SFT keeps dropout by default, as TRL does


def test_float_attention_dropout_rates_are_zeroed_too(tokenizer):
    """Llama's attention reads a float ``attention_dropout`` in forward (no nn.Dropout module to find)."""
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, max_position_embeddings=64, attention_dropout=0.5, attn_implementation="eager",
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).train()
    ids = torch.tensor([[5, 20, 14, 21, 32, 23, 40, 41]])
    with torch.no_grad():
        assert not torch.allclose(model(input_ids=ids).logits, model(input_ids=ids).logits)
        disable_dropout(model)
        torch.testing.assert_close(model(input_ids=ids).logits, model.eval()(input_ids=ids).logits)
    assert model.config.attention_dropout == 0.0
