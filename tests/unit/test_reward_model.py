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


# -- pointwise feedback: thumbs (logistic), ratings / engagement (regression, inverse-propensity weights) -----------


def test_logistic_and_regression_losses_hand_computed():
    from rewardloop.algorithms.reward_model import logistic_loss, regression_loss

    r, u = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 0.0])
    # −log σ(2) and −log σ(−0) = log 2
    assert logistic_loss(r, u).item() == pytest.approx((math.log(1 + math.exp(-2)) + math.log(2)) / 2)
    assert logistic_loss(r, u, torch.tensor([1.5, 0.5])).item() == pytest.approx(
        (1.5 * math.log(1 + math.exp(-2)) + 0.5 * math.log(2)) / 2
    )
    assert regression_loss(torch.tensor([1.0, 3.0]), torch.tensor([0.0, 0.0]), torch.tensor([0.5, 1.5])).item() == 7.0


def test_ips_weights_are_clipped_and_self_normalised():
    from rewardloop.algorithms.reward_model import ips_weights

    w = ips_weights([0.5, 0.01, None, 0.25], clip=10.0)  # 1/p = 2, 100 → 10, 1, 4: mean 4.25
    torch.testing.assert_close(w, torch.tensor([2.0, 10.0, 1.0, 4.0]) / 4.25)
    assert w.mean().item() == pytest.approx(1.0)


def test_resample_by_weight_matches_the_weights_within_one():
    from collections import Counter

    from rewardloop.algorithms.reward_model import resample_by_weight

    weights = [5.0, 0.5, 0.5, 2.0, 2.0]  # Σ = 10, N = 5: expected counts 2.5, 0.25, 0.25, 1, 1
    for seed in range(20):
        idx = resample_by_weight(weights, seed)
        counts = Counter(idx)
        assert len(idx) == 5 and idx == sorted(idx)
        assert counts[0] in (2, 3) and counts[3] == counts[4] == 1 and counts[1] + counts[2] <= 1


def test_concordance_is_the_weighted_auc():
    from rewardloop.algorithms.reward_model import concordance

    t = torch.tensor([1.0, 1.0, 0.0, 0.0])
    assert concordance(torch.tensor([0.9, 0.2, 0.1, 0.5]), t) == 0.75  # 3 of the 4 up/down pairs ordered right
    assert concordance(torch.tensor([0.9, 0.2, 0.1, 0.5]), t, torch.tensor([1.0, 3.0, 1.0, 1.0])) == pytest.approx(
        (1 + 1 + 3) / (1 + 1 + 3 + 3)
    )
    assert concordance(torch.tensor([1.0, 1.0]), torch.tensor([0.0, 1.0])) == 0.5  # ties count ½
    assert math.isnan(concordance(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 1.0])))


def _pointwise_cfg(tmp_path, name: str, rows, test_rows=None, **kw):
    from rewardloop.algorithms.reward_model import RewardModelConfig
    from rewardloop.config import RunConfig
    from rewardloop.envs.tasks import TaskConfig

    task = TaskConfig(dataset=rows, test_dataset=test_rows) if test_rows else TaskConfig(dataset=rows, n_test=8)
    return RewardModelConfig(
        model={"preset": "llama-1m", "device": "cpu", "max_length": 16}, task=task, optim={"lr": 3e-3},
        batch_size=8, eval_every=1000, run=RunConfig(root=str(tmp_path), name=name, progress=False), **kw,
    )  # fmt: skip


def test_thumbs_reward_model_separates_up_from_down(tmp_path):
    from rewardloop.algorithms.reward_model import train

    # unpaired thumbs: the right sum is up, "banana" down; held out: the last 8 rows (unseen prompts)
    up = [{"prompt": f"{a}+{a}=", "completion": f" {2 * a}", "label": True} for a in range(0, 40, 2)]
    down = [{"prompt": f"{a}+{a}=", "completion": " banana", "label": False} for a in range(1, 40, 2)]
    rows = [r for pair in zip(up, down, strict=True) for r in pair]
    flipped = [r | {"label": not r["label"]} for r in rows]
    for name, data in (("thumbs", rows), ("flipped", flipped)):  # one fixed head cannot rank both ways right
        res = train(_pointwise_cfg(tmp_path, name, data, feedback="thumbs", steps=30))
        assert res["member_accuracy"][0] == 1.0  # held-out AUC: every up above every down


def test_ratings_reward_model_orders_by_score(tmp_path):
    from rewardloop.algorithms.reward_model import train
    from rewardloop.rewards.model import RewardModelScorer

    words = {" awful": 1, " fine": 3, " superb": 5}
    rows = [{"prompt": f"rate {i}:", "completion": w, "score": s} for i in range(16) for w, s in words.items()]
    res = train(_pointwise_cfg(tmp_path, "ratings", rows, feedback="ratings", steps=40))
    assert res["member_accuracy"][0] == 1.0
    scores = RewardModelScorer(res["model_dir"], device="cpu")(["rate 99:"] * 3, list(words))
    assert scores[0] < scores[1] < scores[2]


def simpson_engagement_rows() -> list[dict]:
    """Logged watch time where the shown-more-often video looks better only because of whom it was shown to.

    Hidden users: u1 watches everything longer than u2. For each user, B is better than A by 12 s (u1: A 36 s,
    B 48 s; u2: A 0 s, B 12 s) — so under uniform exposure B (30 s) beats A (18 s). The logging policy showed A to u1
    with p = 0.9 and to u2 with p = 0.1 (B the reverse), so the naive mean over logged rows is A 32.4 s, B 15.6 s:
    unweighted training ranks A first; inverse-propensity weighting (1/p) recovers B > A."""
    cells = [("u1", " video A", 0.9, 36.0), ("u1", " video B", 0.1, 48.0)]
    cells += [("u2", " video A", 0.1, 0.0), ("u2", " video B", 0.9, 12.0)]
    rows = []
    for user, video, p, seconds in cells:
        for i in range(round(20 * p)):
            rows.append({"response_id": f"{user}-{video.strip()}-{i}", "prompt": "Recommend:", "completion": video,
                         "event": "watch_time", "value": seconds, "propensity": p, "user_id": user})  # fmt: skip
    return rows


def test_inverse_propensity_weighting_recovers_the_ordering_unweighted_training_gets_wrong(tmp_path):
    from rewardloop.algorithms.reward_model import train
    from rewardloop.rewards.model import RewardModelScorer

    rows = simpson_engagement_rows()
    scores = {}
    for ips in (False, True):
        cfg = _pointwise_cfg(tmp_path, f"ips-{ips}", rows, rows, feedback="engagement", ips=ips, steps=60)
        res = train(cfg)
        a, b = RewardModelScorer(res["model_dir"], device="cpu")(["Recommend:"] * 2, [" video A", " video B"])
        scores[ips] = (a, b)
    assert scores[False][0] > scores[False][1]  # naive: A, shown 9× more often to the heavy watcher, ranks first
    assert scores[True][1] > scores[True][0]  # IPS: B, better for every user, ranks first


def test_engagement_events_of_a_response_are_scored_together_and_weighted():
    from rewardloop.algorithms.reward_model import RewardModelConfig, pointwise_rows
    from rewardloop.envs.tasks import TaskConfig

    cfg = RewardModelConfig(task=TaskConfig(dataset=[{}]), feedback="engagement", ips_clip=4.0)
    base = {"prompt": "p", "completion": "c"}
    rows = [
        base | {"response_id": "r1", "event": "click", "value": 1.0, "propensity": 0.5},
        base | {"response_id": "r1", "event": "like", "value": 1.0, "propensity": 0.5},  # r1: 1 + 2 = 3
        base | {"response_id": "r2", "event": "skip", "value": 1.0, "propensity": 0.1},  # r2: −1, 1/p = 10 → 4
    ]
    train, _ = pointwise_rows(rows, rows, cfg)
    assert [r["weight"] for r in train] == pytest.approx([2 / 3, 4 / 3])  # (2, 4) / mean 3
    # targets standardised with the weighted mean (2/3·3 − 4/3·1)/2 = 1/3 and std 4·√2/3
    mean, std = 1 / 3, math.sqrt((2 / 3 * (3 - 1 / 3) ** 2 + 4 / 3 * (-1 - 1 / 3) ** 2) / 2)
    assert [r["target"] for r in train] == pytest.approx([(3 - mean) / std, (-1 - mean) / std])
    with pytest.raises(ValueError, match=r"response 'r3'.*unknown engagement event type 'clik'"):
        pointwise_rows([base | {"response_id": "r3", "event": "clik", "value": 1.0}], [], cfg)
    with pytest.raises(ValueError, match="feedback=engagement needs logged events"):
        RewardModelConfig(feedback="engagement")
