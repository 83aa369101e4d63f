"""The simulator and the feed / playlist / search environments: click models against hand-computed values, exact
expectations against sampled means, seeded determinism, drift and clickbait, bad actions, the Gymnasium check."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from rewardloop.envs.base import Environment
from rewardloop.envs.personalization import Behaviour, FeedConfig, FeedEnv, PlaylistEnv, SearchConfig, SearchEnv
from rewardloop.envs.personalization.click_models import (
    cascade_click_probs,
    click_probs,
    dbn_click_probs,
    mnl_examination_choice_probs,
    pbm_click_probs,
    sample_clicks,
    sample_examination_choice,
)
from rewardloop.envs.personalization.users import consume, make_user, respond


def test_click_models_match_hand_computed_values():
    assert np.allclose(pbm_click_probs([0.5, 0.4], [1.0, 0.5]), [0.5, 0.2])
    assert np.allclose(cascade_click_probs([0.5, 0.4, 0.2]), [0.5, 0.5 * 0.4, 0.5 * 0.6 * 0.2])
    # DBN: P(E2) = γ (1 − α1 σ1) = 0.9 · 0.75
    assert np.allclose(dbn_click_probs([0.5, 0.4], [0.5, 1.0], 0.9), [0.5, 0.675 * 0.4])
    # MNL over examined positions, v = (0, 0), v0 = 0, θ = (1, ½): S = {1} w.p. ½ → 1/2; S = {1, 2} w.p. ½ → 1/3 each
    assert np.allclose(
        mnl_examination_choice_probs(np.zeros(2), np.array([1.0, 0.5]), 0.0), [0.5 / 2 + 0.5 / 3, 0.5 / 3]
    )
    # batched: the same numbers for every row
    assert np.allclose(cascade_click_probs(np.tile([0.5, 0.4, 0.2], (3, 1)))[2], [0.5, 0.2, 0.06])


@pytest.mark.parametrize("model", ["pbm", "cascade", "dbn"])
def test_click_samplers_agree_with_exact_probabilities(model):
    rng = np.random.default_rng(0)
    a = np.array([0.7, 0.5, 0.3, 0.2])
    params = {
        "examination": np.array([1.0, 0.6, 0.4, 0.3]),
        "satisfaction": np.array([0.6, 0.5, 0.4, 0.9]),
        "gamma": 0.8,
    }
    draws = np.mean([sample_clicks(model, a, rng, **params) for _ in range(20000)], axis=0)
    assert np.allclose(draws, click_probs(model, a, **params), atol=0.015)


def test_feed_choice_sampler_agrees_with_exact_probabilities():
    rng = np.random.default_rng(1)
    v, theta = np.array([1.0, 0.0, 2.0]), np.array([1.0, 0.6, 0.4])
    picks = [sample_examination_choice(v, theta, 0.5, rng) for _ in range(20000)]
    freq = [np.mean([p == k for p in picks]) for k in range(3)]
    assert np.allclose(freq, mnl_examination_choice_probs(v, theta, 0.5), atol=0.015)
    with pytest.raises(ValueError, match="'bogus'"):
        click_probs("bogus", v)


def _slate(env, positions):
    return " ".join(env.candidate_ids[i] for i in positions)


ENVS = {
    "feed": lambda: FeedEnv(),
    "feed-clickbait": lambda: FeedEnv(FeedConfig(behaviour=Behaviour(clickbait=True))),
    "playlist": lambda: PlaylistEnv(),
    "search-dbn": lambda: SearchEnv(SearchConfig(click_model="dbn")),
    "search-cascade": lambda: SearchEnv(SearchConfig(click_model="cascade")),
    "search-pbm": lambda: SearchEnv(SearchConfig(click_model="pbm")),
}


@pytest.mark.parametrize("name", sorted(ENVS))
def test_expected_reward_is_the_mean_of_sampled_rewards(name):
    """The exact expectation the regret is computed from equals the mean reward of many steps from one state."""
    env = ENVS[name]()
    assert isinstance(env, Environment)
    env.reset(seed=3)
    slate = env.slates[len(env.slates) // 3]
    rewards, expected = [], None
    shared = {id(env.catalogue): env.catalogue, id(env.slates): env.slates}  # read-only: not copied
    for i in range(2000):
        twin = copy.deepcopy(env, memo=dict(shared))
        twin.rng = np.random.default_rng(100 + i)
        _, r, _, info = twin.step(_slate(twin, slate))
        rewards.append(r)
        expected = info["expected_reward"]
        assert info["random_reward"] <= info["oracle_reward"] and expected <= info["oracle_reward"] + 1e-12
    sem = np.std(rewards) / np.sqrt(len(rewards))
    assert abs(np.mean(rewards) - expected) < 4 * sem + 1e-9, (np.mean(rewards), expected, sem)


@pytest.mark.parametrize("name", ["feed", "playlist", "search-dbn"])
def test_seeded_runs_are_identical_and_sessions_end(name):
    def run(seed):
        env = ENVS[name]()
        obs, out, done = env.reset(seed=seed), [], False
        rng = np.random.default_rng(seed)
        while not done:
            out.append(obs)
            obs, r, done, info = env.step(_slate(env, env.slates[rng.integers(len(env.slates))]))
            out.append((r, info["expected_reward"]))
        return out

    a = run(7)
    assert a == run(7)
    assert a != run(8)
    assert "Candidates" in a[0] or "Documents" in a[0] or "Next track" in a[0]


@pytest.mark.parametrize(
    ("action", "match"),
    [
        ("i999 {0} {1}", "unknown item id 'i999'"),
        ("{0} {0} {1}", "duplicate item id '{0}'"),
        ("{0} {1}", "has 2 item ids"),
    ],
)
def test_bad_actions_name_the_value(action, match):
    env = FeedEnv()
    env.reset(seed=0)
    ids = env.candidate_ids
    with pytest.raises(ValueError, match=match.format(*ids)):
        env.step(action.format(*ids))
    with pytest.raises(RuntimeError, match="reset"):
        FeedEnv().step("i001")


def test_drift_and_the_clickbait_switch():
    env = FeedEnv()
    cat = env.catalogue
    user = make_user(np.random.default_rng(0))
    bait = next(i for i, it in enumerate(cat.items) if it.clickbait)
    honest = next(i for i, it in enumerate(cat.items) if not it.clickbait and it.topic == cat.items[bait].topic)
    off, on = Behaviour(), Behaviour(clickbait=True)
    assert respond(user, cat, np.array([bait]), on).utility[0] == pytest.approx(
        respond(user, cat, np.array([bait]), off).utility[0] + on.hook
    )
    assert (
        respond(user, cat, np.array([honest]), on).utility[0] == respond(user, cat, np.array([honest]), off).utility[0]
    )
    assert respond(user, cat, np.array([bait]), on).watch_s[0] > respond(user, cat, np.array([bait]), off).watch_s[0]
    topic, before, trust = cat.items[bait].topic, user.interests.copy(), user.trust
    for _ in range(5):
        consume(user, cat, bait, 0.8, on)
    assert user.interests[topic] > before[topic] and user.interests.sum() == pytest.approx(1.0)
    assert user.trust < trust  # low quality erodes trust → lower click utility later
    trusting = copy.deepcopy(user)
    trusting.trust = 1.0
    lost = on.trust_penalty * (1.0 - user.trust)
    assert respond(user, cat, np.array([honest]), on).utility[0] == pytest.approx(
        respond(trusting, cat, np.array([honest]), on).utility[0] - lost
    )


@pytest.mark.parametrize("name", ["feed", "playlist", "search-dbn"])
def test_gymnasium_adapter_passes_check_env(name):
    pytest.importorskip("gymnasium")
    from gymnasium.utils.env_checker import check_env

    from rewardloop.envs.personalization.gym_adapter import GymAdapter

    env = GymAdapter(ENVS[name]())
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=1)
    assert env.observation_space.contains(obs) and "text" in info
    obs, reward, _, truncated, info = env.step(0)
    assert isinstance(reward, float) and truncated is False and "oracle_reward" in info
    with pytest.raises(ValueError, match="not in Discrete"):
        env.step(env.action_space.n)


def test_clickbait_pays_now_and_costs_later():
    """Clickbait switch on, reward = watch time only: putting clickbait first earns more per step, but trust erodes,
    users leave sooner and a session earns less than with a policy that avoids clickbait."""
    from rewardloop.rewards.engagement import EngagementWeights

    watch_only = EngagementWeights(click=0, like=0, share=0, skip=0)
    cfg = FeedConfig(behaviour=Behaviour(clickbait=True), clickbait_fraction=0.3, weights=watch_only)

    def sessions(bait_sign: float) -> tuple[float, float, float]:
        env, first, totals, trust = FeedEnv(cfg), [], [], []
        for s in range(80):
            env.reset(seed=s)
            done, total = False, 0.0
            while not done:
                x, z = env.numeric()
                score = z[:, :8] @ x[:8] + bait_sign * z[:, -1]  # topic match ± the clickbait flag
                _, _, done, info = env.step(_slate(env, np.argsort(-score, kind="stable")[:3]))
                first += [info["expected_reward"]] if total == 0.0 else []
                total += info["expected_reward"]
            totals.append(total)
            trust.append(info["trust"])
        return float(np.mean(first)), float(np.mean(totals)), float(np.mean(trust))

    bait, honest = sessions(+2.0), sessions(-2.0)
    assert bait[0] > honest[0]  # now: more watch time per slate
    assert bait[1] < honest[1]  # later: less per session
    assert bait[2] < honest[2] - 0.1  # trust eroded
