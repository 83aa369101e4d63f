"""The loop's off-policy engagement gate on constructed logs (loop/gate.py, rounds.decide), and the simulated users'
personas and feedback kinds (loop/users.py)."""

from __future__ import annotations

import numpy as np
import pytest

from rewardloop.loop.gate import (
    Logged,
    calibrated_q,
    estimate,
    logged_slates,
    response_rewards,
    slate_ids,
    slate_policy,
)
from rewardloop.loop.rounds import LoopConfig, decide, ope_passes, proxy_gold_alarm
from rewardloop.loop.users import BALANCED, OUTRAGE, PERSONAS, Persona, UserPopulation
from rewardloop.rewards.reviews import reviews_reward


def constructed_logs(n: int, seed: int = 0) -> tuple[list[Logged], float, float]:
    """Two-member slates shown uniformly (μ = ½): member 0 ("good") earns ~2, member 1 ("bad") ~0. Returns the logs,
    and the true values of the uniform policy (1.0) and of one showing "good" w.p. 0.9 (1.8)."""
    rng = np.random.default_rng(seed)
    logs = []
    for _ in range(n):
        shown = int(rng.integers(2))
        reward = (2.0 if shown == 0 else 0.0) + float(rng.normal(0, 0.3))
        logs.append(Logged("Review of the lamp:", [" good", " bad"], shown, 0.5, reward))
    return logs, 1.0, 1.8


def policy(p_good: float) -> np.ndarray:
    return np.array([p_good, 1.0 - p_good])


def test_slate_policy_is_the_resampling_distribution():
    lp = np.array([-3.0, -5.0, -4.0])
    assert slate_policy(lp, lp) == pytest.approx(np.full(3, 1 / 3))  # the serving model: uniform
    tilted = slate_policy(lp + np.array([np.log(4.0), 0.0, 0.0]), lp)  # the candidate finds member 0 4× likelier
    assert tilted == pytest.approx(np.array([4, 1, 1]) / 6)


@pytest.mark.parametrize("method", ["snips", "dr"])
def test_estimates_recover_the_true_engagement(method):
    logs, v_uniform, v_good = constructed_logs(2000)
    q = (lambda prompt, slate: np.array([2.0, 0.0])) if method == "dr" else None  # a perfect q̂
    serving = estimate(logs, [policy(0.5)] * len(logs), method, q)
    better = estimate(logs, [policy(0.9)] * len(logs), method, q)
    worse = estimate(logs, [policy(0.1)] * len(logs), method, q)
    assert serving.covers(v_uniform) and better.covers(v_good) and worse.covers(0.2)
    if method == "snips":  # the serving model's weights are 1: its estimate is the logged mean
        assert serving.value == pytest.approx(np.mean([lg.reward for lg in logs]))
    assert better.lo > serving.value > worse.hi


def test_dr_needs_a_reward_model_and_methods_are_checked():
    logs, _, _ = constructed_logs(10)
    with pytest.raises(ValueError, match="needs a reward model"):
        estimate(logs, [policy(0.5)] * 10, "dr")
    with pytest.raises(ValueError, match=r"snips \| dr \| none"):
        estimate(logs, [policy(0.5)] * 10, "ips2")


def gate_metrics(p_good: float, n: int = 200, trusted: tuple[float, float] | None = None) -> dict[str, float]:
    logs, _, _ = constructed_logs(n, seed=1)
    serving = estimate(logs, [policy(0.5)] * n, "snips")
    cand = estimate(logs, [policy(p_good)] * n, "snips")
    m = {"ope_serving": serving.value, "ope_candidate": cand.value, "ope_lo": cand.lo, "ope_hi": cand.hi}
    if trusted:
        m |= {"reward_parent": trusted[0], "reward_candidate": trusted[1]}
    return m


def test_ope_gate_decisions():
    cfg = LoopConfig(algo="engagement", gate={"ope": "snips"})
    assert decide(cfg, gate_metrics(0.9)) == "promoted"  # clearly more engaging: lower bound above serving
    assert decide(cfg, gate_metrics(0.1)) == "rejected"  # less engaging
    assert decide(cfg, gate_metrics(0.55)) == "rejected"  # a little better, but within the noise
    assert decide(
        cfg.model_copy(update={"gate": cfg.gate.model_copy(update={"ope_tolerance": 0.5})}), gate_metrics(0.55)
    )
    trusted = LoopConfig(algo="engagement", gate={"ope": "snips", "reward": "reviews_gold"})
    assert decide(trusted, gate_metrics(0.9, trusted=(0.4, 0.5))) == "promoted"
    assert decide(trusted, gate_metrics(0.1, trusted=(0.4, 0.5))) == "rejected"  # gold up, engagement down
    hacked = gate_metrics(0.9, trusted=(0.5, 0.3))  # engagement up, gold down: refused, and the alarm rings
    assert decide(trusted, hacked) == "rejected" and proxy_gold_alarm(hacked) and ope_passes(trusted, hacked)
    assert ope_passes(trusted, {"reward_parent": 0.0})  # no OPE made: no OPE condition


def test_logged_slates_read_the_slate_and_score_events(tmp_path):
    from rewardloop.store import Store

    with Store.open(f"sqlite:///{tmp_path / 's.db'}") as store:
        for k, text in enumerate([" good", " bad"]):
            store.log_interaction(
                id=f"cmpl-abc-{k}",
                model_version="v0",
                prompt="Review of the lamp:",
                completion=text,
                candidate_index=k,
                n_candidates=2,
                propensity=0.5,
            )
        rows = [
            {"response_id": "cmpl-abc-1", "prompt": "Review of the lamp:", "completion": " bad", "propensity": 0.5} | ev
            for ev in ({"event": "dwell", "value": 60.0}, {"event": "like", "value": 1.0})
        ]
        assert response_rewards(rows)["cmpl-abc-1"]["reward"] == pytest.approx(0.5 * 60 / 30 + 2.0)
        (lg,) = logged_slates(store, rows)
        assert lg.slate == [" good", " bad"] and lg.shown == 1 and lg.propensity == 0.5 and lg.reward == 3.0
    assert slate_ids("cmpl-x-7", 1, 3) == (["cmpl-x-6", "cmpl-x-7", "cmpl-x-8"], 1)
    assert slate_ids("resp-1", None, 1) == (["resp-1"], 0)
    with pytest.raises(ValueError, match="does not end in -<index>"):
        slate_ids("resp-abc", 0, 2)


def test_calibrated_q_maps_scores_to_engagement_units():
    train = [
        {"response_id": f"r{i}", "prompt": "p", "completion": f"c{i}", "propensity": 0.5, "event": "like", "value": 1.0}
        for i in range(4)
    ] + [
        {"response_id": f"s{i}", "prompt": "p", "completion": f"d{i}", "propensity": 0.5, "event": "skip", "value": 1.0}
        for i in range(4)
    ]

    def score(prompts, completions):  # a reward model that tells likes (c…) from skips (d…), on its own scale
        return [10.0 if c.startswith("c") else -10.0 for c in completions]

    q = calibrated_q(score, train)
    assert q("p", ["c9", "d9"]) == pytest.approx([2.0, -1.0], abs=1e-3)  # like = 2, skip = −1 engagement units


# -- users ---------------------------------------------------------------------------------------------------------


def test_personas_differ_in_taste_and_balanced_is_gold():
    prompt = "Review of the lamp:"
    good = "the bulb is great. the shade and the base are solid. i would buy this lamp again."
    short = "the bulb is great."
    texts = [good, short, "great great great superb superb camera lens!!", ""]
    assert [BALANCED.reward(prompt, t) for t in texts] == pytest.approx(reviews_reward([prompt] * 4, texts))
    by = {p.name: p for p in PERSONAS}
    assert by["skimmer"].reward(prompt, short) - by["skimmer"].reward(prompt, good) > BALANCED.reward(
        prompt, short
    ) - BALANCED.reward(prompt, good)  # the skimmer minds length
    rant = "the bulb is awful. i would not buy this lamp again."
    assert OUTRAGE.reward(prompt, rant) > 0.5 > 0 > OUTRAGE.reward(prompt, good)  # engages with what gold penalises
    assert BALANCED.reward(prompt, rant) < BALANCED.reward(prompt, good)
    assert all(-1.0 <= p.reward(prompt, t) <= 1.0 for p in (*PERSONAS, OUTRAGE) for t in texts)
    with pytest.raises(ValueError, match="unknown component 'humour'"):
        Persona("x", {"humour": 1.0})


def test_users_report_thumbs_ratings_and_engagement_by_hidden_reward():
    users = UserPopulation("http://127.0.0.1:9", "m", personas=(BALANCED,), noise=0.1, seed=0)
    prompt, good, bad = "Review of the lamp:", "the bulb is great. i would buy this lamp again.", "lens lens lens"
    n = 400

    def mean(f, text):
        return sum(f(BALANCED, prompt, text) for _ in range(n)) / n

    assert mean(users.thumbs, good) > 0.5 > -0.5 > mean(users.thumbs, bad)
    assert mean(users.rating, good) > 4.0 and mean(users.rating, bad) == 1.0
    assert all(1 <= users.rating(BALANCED, prompt, good) <= 5 for _ in range(50))

    from rewardloop.rewards.engagement import engagement_score

    def engagement(text):
        return sum(engagement_score(dict(users.engage(BALANCED, prompt, text))) for _ in range(n)) / n

    assert engagement(good) > engagement(bad) + 1.0
    liars = UserPopulation("http://127.0.0.1:9", "m", flip=True, seed=0)
    assert sum(liars.thumbs(BALANCED, prompt, good) for _ in range(n)) / n < -0.5
    assert users.persona_of["user-0"] is BALANCED
    mixed = UserPopulation("http://127.0.0.1:9", "m", personas=PERSONAS, n_users=6)
    assert [mixed.persona_of[u].name for u in mixed.users] == ["critic", "fan", "skimmer"] * 2
