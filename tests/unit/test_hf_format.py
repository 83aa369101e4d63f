"""Reward and value models on disk are Hugging Face sequence-classification checkpoints (num_labels=1), both ways."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import save_file
from tests.unit.test_models import plain_config
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
)

from rewardloop.models.value_head import ValueModel, load_value_model, value_model_from_policy
from rewardloop.rewards.model import encode_texts
from rewardloop.runs import restore_weights

IDS = torch.tensor([[5, 20, 14, 21, 32, 23, 40, 41], [7, 8, 9, 10, 11, 12, 13, 30]])  # no pad (0) or eos (2) ids
MASK = torch.ones_like(IDS)


def known_head_(model: ValueModel) -> ValueModel:
    """Set the head to fixed, non-trivial weights (nothing is trained in these tests)."""
    with torch.no_grad():
        w = model.value_head.weight
        w.copy_(torch.linspace(-1.0, 1.0, w.numel()).reshape(w.shape))
    return model


def scores(model: ValueModel, ids=IDS, mask=MASK) -> torch.Tensor:
    with torch.no_grad():
        return model.eval().score(ids, mask)


@pytest.mark.parametrize("preset", ["llama-1m", "qwen2-1m"])
def test_saved_reward_model_is_a_plain_transformers_sequence_classifier(preset, tiny_model, tokenizer, tmp_path):
    stats = {"mean": 0.5, "std": 2.0}
    model = known_head_(ValueModel(tiny_model(preset), kind="reward", stats=stats))
    model.save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    assert not list(tmp_path.glob("rm/value_head*"))  # nothing lives in side files

    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm").eval()
    assert type(hf).__name__ == hf.config.architectures[0] == f"{hf.config.model_type.title()}ForSequenceClassification"
    assert hf.config.num_labels == 1 and hf.config.pad_token_id == tokenizer.pad_token_id
    assert hf.score.bias is None and torch.equal(hf.score.weight, model.value_head.weight)
    with torch.no_grad():
        hf_scores = hf(input_ids=IDS).logits[:, 0]  # HF pools at the last token (no pad id in IDS)
    torch.testing.assert_close(hf_scores, scores(model), atol=1e-5, rtol=0)
    meta = json.loads((tmp_path / "rm" / "config.json").read_text())["rewardloop"]
    assert meta == {"kind": "reward", "stats": stats} == AutoConfig.from_pretrained(tmp_path / "rm").rewardloop


def test_checkpoint_restore_and_shared_critic_use_the_same_layout(tiny_model, tokenizer, tmp_path):
    policy = tiny_model("llama-1m")
    critic = known_head_(value_model_from_policy(policy, shared=True))
    assert critic.lm is policy  # the shared critic's trunk is the policy's
    before = policy.config.to_dict()
    critic.save_pretrained(tmp_path / "value")
    assert policy.config.to_dict() == before  # saving did not touch the policy's config
    fresh = ValueModel(tiny_model("llama-1m", seed=1), kind="value")
    assert not torch.allclose(scores(fresh), scores(critic))
    restore_weights(fresh, tmp_path / "value")  # what RunDir.load_checkpoint does on --resume
    torch.testing.assert_close(scores(fresh), scores(critic), atol=1e-6, rtol=0)


def seq_cls_config(arch: str, vocab: int, num_labels: int = 1):
    """``plain_config`` (tests/unit/test_models.py) with a sequence-classification head of ``num_labels``."""
    config = plain_config(arch, vocab)
    config.num_labels, config.pad_token_id = num_labels, 0
    return config


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_a_plain_transformers_reward_model_loads_with_its_own_head(arch, tokenizer, tmp_path):
    torch.manual_seed(0)
    hf = AutoModelForSequenceClassification.from_config(seq_cls_config(arch, len(tokenizer))).eval()
    with torch.no_grad():
        hf.score.weight.normal_()  # a visible head (init std 0.02 gives near-zero scores)
    hf.save_pretrained(tmp_path / "trl-rm")  # the layout TRL's RewardTrainer writes
    tokenizer.save_pretrained(tmp_path / "trl-rm")

    model, tok = load_value_model(tmp_path / "trl-rm", device="cpu")
    assert model.kind == "reward" and model.stats == {}
    ids, mask = encode_texts(tok, ["1+2=", "Review of the lamp:"], [" 3", " the bulb is great."], "cpu")
    assert (mask == 0).any()  # right padding: HF pools at the last non-pad token, we at the last mask position
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask).logits[:, 0]
    torch.testing.assert_close(scores(model, ids, mask), expected, atol=1e-5, rtol=0)


def test_the_old_layout_loads_with_the_same_normalised_scores(tiny_model, tokenizer, tmp_path):
    lm = tiny_model("llama-1m")
    lm.save_pretrained(tmp_path / "old")
    head = {"value_head.weight": torch.randn(1, lm.config.hidden_size), "value_head.bias": torch.tensor([0.75])}
    save_file(head, tmp_path / "old" / "value_head.safetensors")
    (tmp_path / "old" / "value_head.json").write_text(json.dumps({"kind": "reward", "stats": {"mean": 1, "std": 2}}))
    tokenizer.save_pretrained(tmp_path / "old")
    model, _ = load_value_model(tmp_path / "old", device="cpu")
    with torch.no_grad():
        old_raw = (lm.model(input_ids=IDS).last_hidden_state[:, -1] @ head["value_head.weight"].T)[:, 0] + 0.75
    new = (scores(model) - model.stats["mean"]) / model.stats["std"]
    torch.testing.assert_close(new, (old_raw - 1) / 2, atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", ["causal-lm", "two-labels", "empty", "missing"])
def test_a_directory_that_is_no_reward_model_is_named_in_the_error(case, tiny_model, tokenizer, tmp_path):
    path = tmp_path / case
    if case == "causal-lm":
        tiny_model("llama-1m").save_pretrained(path)
    elif case == "two-labels":
        AutoModelForSequenceClassification.from_config(seq_cls_config("llama", len(tokenizer), 2)).save_pretrained(path)
    elif case == "empty":
        path.mkdir()
    if path.exists():
        tokenizer.save_pretrained(path)
    with pytest.raises((ValueError, FileNotFoundError), match=re.escape(str(path))) as err:
        load_value_model(path, device="cpu")
    if case in ("causal-lm", "two-labels"):
        assert "num_labels=1" in str(err.value)
