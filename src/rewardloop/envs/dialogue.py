"""`dialogue`: a multi-turn shopping conversation with a simulated user who has a goal (an item and a quality).

The user wants, say, a sturdy kettle. The first turn may reveal the item, the quality, both or neither; the policy
asks for what it does not know and then buys::

    user: i need a kettle . agent: ask quality      (action)
    user: a sturdy one . agent: buy sturdy kettle    (action, ends the episode)

Actions (one per turn, the first line of the generated text): ``ask item``, ``ask quality``, ``buy {quality}
{item}``. Reward, given when the episode ends: 1 − ``turn_cost`` · (turns − 1) for buying the goal, 0 for buying
anything else, for running out of ``max_turns``, or for an action the user does not understand (she answers
``sorry ?`` and the turn is spent). So the best policy asks exactly for what the opening left out — conversation flow,
not only the final answer, is rewarded. Products and qualities are one token each in the built-in tokenizer; the
other words are not (`` ask quality`` + EOS is 9 tokens), so give generation ``max_new_tokens: 10``.

Use it as the environment of an RL run (``env: rewardloop.envs.dialogue:ShopperEnv`` with ``max_turns: 3``): the
factory is called with ``seed=``; evaluation runs on held-out seeds. ``demonstrations`` gives SFT rows for a warm
start; docs/guides/tasks.md has one measured SFT → GRPO run.
"""

from __future__ import annotations

import random

from rewardloop.rewards.reviews import ADJECTIVES, PRODUCTS
from rewardloop.types import Observation

ITEMS = tuple(PRODUCTS)
QUALITIES = ADJECTIVES["positive"]
OPENINGS = {  # what the first turn reveals → the user's words
    (False, False): "user: i want to buy something .",
    (True, False): "user: i need a {item} .",
    (False, True): "user: i want something {quality} .",
    (True, True): "user: i need a {quality} {item} .",
}
PROMPT = " agent:"


class ShopperEnv:
    """The simulated user of one conversation; ``seed`` fixes her goal and what her first turn reveals."""

    def __init__(self, *, seed: int = 0, turn_cost: float = 0.1, reveal_rate: float = 0.5) -> None:
        self.turn_cost, self.reveal_rate = turn_cost, reveal_rate
        self.reset(seed=seed)

    def reset(self, *, seed: int | None = None) -> Observation:
        rng = random.Random(seed)
        self.item, self.quality = rng.choice(ITEMS), rng.choice(QUALITIES)
        self.known = (rng.random() < self.reveal_rate, rng.random() < self.reveal_rate)  # item, quality revealed
        self.turns = 0
        return OPENINGS[self.known].format(item=self.item, quality=self.quality) + PROMPT

    def step(self, action: str) -> tuple[Observation | None, float, bool, dict]:
        self.turns += 1
        words = (action.strip().splitlines() or [""])[0].split()
        info = {"goal": f"{self.quality} {self.item}", "turns": self.turns}
        if words[:1] == ["buy"]:
            success = words[1:] == [self.quality, self.item]
            reward = max(0.0, 1.0 - self.turn_cost * (self.turns - 1)) if success else 0.0
            return None, reward, True, info | {"success": success}
        if words == ["ask", "item"]:
            reply = f"user: a {self.item} ."
        elif words == ["ask", "quality"]:
            reply = f"user: a {self.quality} one ."
        else:
            reply = "user: sorry ?"
        return " " + reply + PROMPT, 0.0, False, info | {"success": False}


def demonstrations(seeds: range, eos: str = "<eos>") -> list[dict[str, str]]:
    """SFT rows of the best conversation for each seed, one row per policy turn: ``prompt`` = the conversation so far
    in the token layout of a multi-turn rollout (each earlier action followed by ``eos``), ``completion`` = the next
    action (SFT appends EOS, as generation ends each action)."""
    rows = []
    for seed in seeds:
        env = ShopperEnv(seed=seed)
        so_far = env.reset(seed=seed)
        asks = [a for a, known in zip(("ask item", "ask quality"), env.known, strict=True) if not known]
        for action in [*asks, f"buy {env.quality} {env.item}"]:
            rows.append({"prompt": so_far, "completion": " " + action})
            obs, _, _, _ = env.step(action)
            so_far += " " + action + eos + (obs or "")
    return rows


TEST_SEEDS = 1_000_000  # held-out conversations (and RL evaluation episodes) start here, far from training seeds


def dialogue_splits(seed: int, n_train: int, n_test: int) -> tuple[list[dict], list[dict]]:
    """``task.name: dialogue``: SFT rows (one per policy turn, ``answer`` = the best action) of ``n_train`` training
    conversations and ``n_test`` held-out ones; ``seed`` offsets both ranges."""
    base = seed * 10 * (n_train + n_test)
    train = demonstrations(range(base, base + n_train))
    test = demonstrations(range(TEST_SEEDS + base, TEST_SEEDS + base + n_test))
    return [r | {"answer": r["completion"].strip()} for r in train], [
        r | {"answer": r["completion"].strip()} for r in test
    ]
