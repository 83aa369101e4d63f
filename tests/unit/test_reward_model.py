"""Reward model pieces: Bradley–Terry loss, last-token scoring (pad == eos safe), save/load, ensembles."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from rewardloop.algorithms.reward_model import (
    bootstrap_indices,
    bradley_terry_loss,
    pairwise_accuracy,
)
from rewardloop.config import ModelConfig
from rewardloop.models import load_pretrained
from rewardloop.models.value_head import ValueModel, last_token_index, load_value_model
from rewardloop.rewards.model import RewardModelScorer, encode_texts


@pytest.fixture(scope="module")
def lm_tok():
    torch.manual_seed(0)
    lm, tok = load_pretrained(ModelConfig(preset="llama-1m", device="cpu", max_length=64))
    tok.pad_token = tok.eos_token  # the dangerous case: pad == eos
    return lm, tok


def test_bradley_terry_loss_hand_computed():
    rc, rr = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0])
    # −log σ(1) = log(1 + e^{−1}); −log σ(0) = log 2.
    assert bradley_terry_loss(rc, rr).item() == pytest.approx((math.log(1 + math.exp(-1)) + math.log(2)) / 2)
    # A margin of 1 on the first pair turns its term into −log σ(0).
    assert bradley_terry_loss(rc, rr, torch.tensor([1.0, 0.0])).item() == pytest.approx(math.log(2))


def test_pairwise_accuracy_counts_ties_as_half():
    assert pairwise_accuracy(torch.tensor([1.0, 0.0, 2.0, 1.0]), torch.tensor([0.0, 1.0, 2.0, 0.5])) == 0.625


def test_last_token_index_left_and_right_padding():
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert last_token_index(mask).tolist() == [2, 4, 4]


def test_bootstrap_indices_resample_with_replacement():
    idx = bootstrap_indices(100, seed=3)
    assert len(idx) == 100 and len(set(idx)) < 100 and idx == bootstrap_indices(100, seed=3)


def _left_pad(ids: torch.Tensor, mask: torch.Tensor, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    out_ids, out_mask = torch.full_like(ids, pad), torch.zeros_like(mask)
    for i in range(ids.shape[0]):
        n = int(mask[i].sum())
        out_ids[i, ids.shape[1] - n :], out_mask[i, ids.shape[1] - n :] = ids[i, :n], 1
    return out_ids, out_mask


def test_scores_invariant_to_batch_size_and_padding_side_when_pad_is_eos(lm_tok):
    lm, tok = lm_tok
    model = ValueModel(lm, kind="reward").eval()
    eos = tok.eos_token
    prompts = ["Review of the lamp:", "1+1=", "Review of the mug:"]
    responses = [" the bulb is great." + eos, " 2" + eos, " the rim is cheap. i hate the glaze." + eos]
    with torch.no_grad():
        single = torch.cat(
            [model.score(*encode_texts(tok, [p], [r], "cpu")) for p, r in zip(prompts, responses, strict=True)]
        )
        ids, mask = encode_texts(tok, prompts, responses, "cpu")
        assert (ids == tok.pad_token_id).sum() > 3  # padding and real EOS share one id here
        right = model.score(ids, mask)
        left = model.score(*_left_pad(ids, mask, tok.pad_token_id))
    assert torch.allclose(single, right, atol=1e-5)
    assert torch.allclose(single, left, atol=1e-5)
    # The score is read at the real last token (the EOS), not at the first pad-id position.
    first_pad = (ids[0] == tok.pad_token_id).nonzero()[0].item()
    assert first_pad == int(mask[0].sum()) - 1  # the response's own EOS is the first pad id
    with torch.no_grad():
        values = model(ids, mask)
    assert values[2, int(mask[2].sum()) - 1].item() == pytest.approx(right[2].item(), abs=1e-6)


def test_save_load_roundtrip_as_a_sequence_classification_checkpoint(lm_tok, tmp_path):
    lm, tok = lm_tok
    model = ValueModel(lm, kind="reward", stats={"mean": 0.5, "std": 2.0}).eval()
    assert model.value_head.bias is None  # as HF's `score` head
    model.save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    loaded, _ = load_value_model(tmp_path / "rm", device="cpu")
    ids, mask = encode_texts(tok, ["1+2="], [" 3"], "cpu")
    with torch.no_grad():
        assert torch.allclose(model.score(ids, mask), loaded.score(ids, mask), atol=1e-6)
    assert loaded.kind == "reward" and loaded.stats == {"mean": 0.5, "std": 2.0}
    assert sorted(p.name for p in (tmp_path / "rm").glob("*.safetensors")) == ["model.safetensors"]  # no side files
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm").config.num_labels == 1
    # A single model dir loads as a one-member ensemble with normalised scores (r − μ) / σ and std 0.
    scorer = RewardModelScorer(tmp_path / "rm", device="cpu")
    out = scorer(["1+2="], [" 3"])
    raw = float(model.score(ids, mask).detach())
    assert out[0] == pytest.approx((raw - 0.5) / 2.0, abs=1e-5) and scorer.last_stats["std"].item() == 0.0


def test_ensemble_mean_std_and_uncertainty_penalty(lm_tok):
    lm, tok = lm_tok
    torch.manual_seed(1)
    members = [ValueModel(lm, kind="reward") for _ in range(3)]
    ens = RewardModelScorer([], members=[(m, tok) for m in members], uncertainty_penalty=2.0)
    prompts, responses = ["1+2=", "3+4="], [" 3", " 7"]
    s = ens.member_scores(prompts, responses)  # [3, 2]
    score = torch.tensor(ens(prompts, responses))
    assert s.shape == (3, 2)
    stats = ens.last_stats
    assert torch.allclose(stats["mean"], s.mean(0)) and torch.allclose(stats["std"], s.std(0))
    assert torch.allclose(score, s.mean(0) - 2.0 * s.std(0))
    assert (stats["std"] > 0).all()  # three differently initialised heads disagree


def test_reward_model_reads_pairs_from_the_task_like_every_command(tmp_path):
    from rewardloop.algorithms.reward_model import RewardModelConfig, train
    from rewardloop.config import ConfigError, RunConfig, load_config
    from rewardloop.envs.tasks import TaskConfig

    with pytest.raises(ConfigError, match=r"task\.name: dataset with task\.path"):
        load_config(RewardModelConfig, None, ["data.path=prefs.jsonl"])
    pairs = [{"prompt": f"{a}+{a}=", "chosen": f" {2 * a}", "rejected": " banana"} for a in range(40)]
    swapped = [p | {"chosen": p["rejected"], "rejected": p["chosen"]} for p in pairs]
    for name, rows in (("rm", pairs), ("swapped", swapped)):  # one fixed head cannot rank both orders right
        cfg = RewardModelConfig(
            model={"preset": "llama-1m", "device": "cpu", "max_length": 16},
            task=TaskConfig(dataset=rows, n_test=8),
            optim={"lr": 3e-3},
            steps=30, batch_size=8, eval_every=30,
            run=RunConfig(root=str(tmp_path), name=name, progress=False),
        )  # fmt: skip
        res = train(cfg)
        assert res["member_accuracy"][0] == 1.0  # held-out: the last 8 of the user's pairs, unseen in training
