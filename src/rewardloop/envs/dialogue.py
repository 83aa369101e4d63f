"""`dialogue`: a multi-turn shopping conversation with a simulated user who has a goal (an item and a quality).

The user wants, say, a sturdy kettle. Her first turn may reveal the item, the quality, both or neither; the policy
asks for what it does not know and then buys::

    user: a kettle .        agent: how                (action: asks for the quality)
    user: a sturdy one .    agent: buy sturdy kettle  (action, ends the episode)

The text the model sees has no ``user:`` / ``agent:`` labels: each observation is the user's words ending in `` .``
or `` ?`` and each action ends with EOS (``hi . what<eos> a kettle . how<eos> a sturdy one .`` → `` buy sturdy
kettle``). The words are short — products, qualities, ``how`` and ``buy`` are one token each of the built-in
tokenizer, ``what`` two — so a whole conversation is at most 22 tokens and an action at most 4 with EOS.

Actions (one per turn, the first line of the generated text): ``what`` (asks for the item), ``how`` (asks for the
quality), ``buy {quality} {item}``. Reward, given when the episode ends: 1 − ``turn_cost`` · (turns − 1) for buying
the goal, 0 for buying anything else, for running out of ``max_turns``, or for an action the user does not
understand (she answers ``sorry ?`` and the turn is spent). So the best policy asks exactly for what the opening left
out — conversation flow, not only the final answer, is rewarded.

Use it as the environment of an RL run (``env: rewardloop.envs.dialogue:ShopperEnv`` with ``max_turns: 3``): the
factory is called with ``seed=``; evaluation runs on held-out seeds. ``demonstrations`` gives SFT rows for a warm
start; configs/{sft,grpo,ppo}/dialogue.yaml and docs/guides/tasks.md have the measured SFT → RL runs.
"""

from __future__ import annotations

import random

from rewardloop.rewards.reviews import ADJECTIVES, PRODUCTS
from rewardloop.types import Observation

ITEMS = tuple(PRODUCTS)
QUALITIES = ADJECTIVES["positive"]
OPENINGS = {  # what the first turn reveals (item, quality) → the user's words
    (False, False): "hi .",
    (True, False): "a {item} .",
    (False, True): "a {quality} one .",
    (True, True): "a {quality} {item} .",
}
ASK = {"item": "what", "quality": "how"}  # the two questions, one word each
NOT_UNDERSTOOD = " sorry ?"


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
        return OPENINGS[self.known].format(item=self.item, quality=self.quality)

    def step(self, action: str) -> tuple[Observation | None, float, bool, dict]:
        self.turns += 1
        words = (action.strip().splitlines() or [""])[0].split()
        info = {"goal": f"{self.quality} {self.item}", "turns": self.turns}
        if words[:1] == ["buy"]:
            success = words[1:] == [self.quality, self.item]
            reward = max(0.0, 1.0 - self.turn_cost * (self.turns - 1)) if success else 0.0
            return None, reward, True, info | {"success": success}
        if words == [ASK["item"]]:
            reply = f" a {self.item} ."
        elif words == [ASK["quality"]]:
            reply = f" a {self.quality} one ."
        else:
            reply = NOT_UNDERSTOOD
        return reply, 0.0, False, info | {"success": False}


def demonstrations(seeds: range, eos: str = "<eos>") -> list[dict[str, str]]:
    """SFT rows of the best conversation for each seed, one row per policy turn: ``prompt`` = the conversation so far
    in the token layout of a multi-turn rollout (each earlier action followed by ``eos``), ``completion`` = the next
    action (SFT appends EOS, as generation ends each action)."""
    rows = []
    for seed in seeds:
        env = ShopperEnv(seed=seed)
        so_far = env.reset(seed=seed)
        asks = [ASK[what] for what, known in zip(("item", "quality"), env.known, strict=True) if not known]
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
