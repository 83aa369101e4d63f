"""The `dialogue` environment: a simulated shopper whose goal is reached in few turns by asking only what is unknown."""

from __future__ import annotations

import pytest

from rewardloop.envs.base import Environment
from rewardloop.envs.dialogue import ASK, OPENINGS, ShopperEnv


def optimal_actions(env: ShopperEnv) -> list[str]:
    asks = [ASK[what] for what, known in zip(("item", "quality"), env.known, strict=True) if not known]
    return [*asks, f"buy {env.quality} {env.item}"]


def play(env: ShopperEnv, actions: list[str]) -> tuple[float, bool, list]:
    total, done, observations = 0.0, False, []
    for a in actions:
        obs, r, done, _ = env.step(a)
        total += r
        observations.append(obs)
        if done:
            break
    return total, done, observations


def test_shopper_is_an_environment_and_seeded():
    env = ShopperEnv(seed=3)
    assert isinstance(env, Environment)
    first = env.reset(seed=3)
    assert first == ShopperEnv(seed=3).reset(seed=3) and first.endswith(" .")
    openings = {ShopperEnv(seed=s).known for s in range(40)}
    assert openings == set(OPENINGS)  # every kind of opening occurs


@pytest.mark.parametrize("seed", range(8))
def test_the_optimal_conversation_earns_one_minus_the_cost_of_its_questions(seed):
    env = ShopperEnv(seed=seed)
    env.reset(seed=seed)
    actions = optimal_actions(env)
    reward, done, observations = play(env, actions)
    assert done and reward == pytest.approx(1.0 - 0.1 * (len(actions) - 1))
    for asked, obs in zip(actions, observations[:-1], strict=False):
        assert (env.item if asked == ASK["item"] else f"{env.quality} one") in obs


def test_wasted_turns_cost_and_wrong_goals_earn_nothing():
    env = ShopperEnv(seed=1)
    env.reset(seed=1)
    goal = f"buy {env.quality} {env.item}"
    assert play(env, ["what", "what", "hello", goal])[0] == pytest.approx(0.7)
    env.reset(seed=1)
    obs, r, done, info = env.step("hello\nbuy it")
    assert (r, done) == (0.0, False) and "sorry" in obs and info["turns"] == 1
    env.reset(seed=1)
    other = next(i for i in ("kettle", "lamp") if i != env.item)
    assert play(env, [f"buy {env.quality} {other}"])[:2] == (0.0, True)


def test_shopper_runs_in_env_collection(tiny_llama, tokenizer):
    from rewardloop.config import GenerationConfig
    from rewardloop.rewards.composite import RewardSet
    from rewardloop.rollout.collect import collect_step

    gen = GenerationConfig(max_new_tokens=4, temperature=1.0)
    empty = RewardSet({}, {}, "skip", None)
    ro = collect_step(
        tiny_llama, tokenizer, gen, empty, env_factory=ShopperEnv, n_groups=2, samples_per_prompt=2, max_turns=3
    )
    assert len(ro.responses) == 4 and ro.rewards.shape == (4,)
    assert all(p.endswith(" .") for p in ro.prompts)


def test_demonstrations_follow_the_rollout_layout(tokenizer):
    from rewardloop.envs.dialogue import demonstrations

    rows = demonstrations(range(20))
    seeds_turns = [ShopperEnv(seed=s).known for s in range(20)]
    assert len(rows) == sum(3 - sum(k) for k in seeds_turns)  # one row per policy turn of the best conversation
    for row in rows:
        assert row["prompt"].endswith(" .") and row["completion"].split()[0] in ("what", "how", "buy")
        earlier = row["prompt"].count("<eos>")
        assert earlier == row["prompt"].count(" .") - 1  # each earlier action ends with EOS, as in a rollout
        assert tokenizer.eos_token_id in tokenizer(row["prompt"])["input_ids"] or earlier == 0
    last = [r for r in rows if r["completion"].startswith(" buy")]
    assert len(last) == 20


def test_dialogue_task_rows_are_held_out_turns_scored_by_their_best_action():
    from rewardloop.envs.tasks import TaskConfig, load_task

    task = load_task(TaskConfig(name="dialogue", n_train=30, n_test=10))
    assert len(task.test) >= 10 and all(r["answer"] == r["completion"].strip() for r in task.test)
    assert task.train == load_task(TaskConfig(name="dialogue", n_train=30, n_test=10)).train  # seeded
    assert task.train != load_task(TaskConfig(name="dialogue", n_train=30, n_test=10, seed=1)).train
    first_turns = [r for r in task.test if "<eos>" not in r["prompt"]]
    assert len(first_turns) == 10  # one first turn per held-out conversation
    best = [r["answer"] for r in task.test]
    assert task.score(task.test, best) == [1.0] * len(best)
    assert task.score(task.test[:1], ["buy nothing"]) == [0.0]


def test_demonstration_tokens_equal_the_rollout_context(tokenizer):
    """SFT must see the token ids a multi-turn rollout feeds at RL time: the first observation encoded as a prompt,
    then per turn the action's tokens + EOS (what generation emits) and the next observation encoded on its own."""
    from rewardloop.envs.dialogue import demonstrations

    for seed in range(30):
        env = ShopperEnv(seed=seed)
        context = tokenizer(env.reset(seed=seed))["input_ids"]
        for row in demonstrations(range(seed, seed + 1)):
            assert tokenizer(row["prompt"])["input_ids"] == context, row
            obs, _, _, _ = env.step(row["completion"])
            context += tokenizer(row["completion"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            context += tokenizer(obs, add_special_tokens=False)["input_ids"] if obs else []
        assert len(context) <= 22  # short enough for model.max_length 32 with the last action
