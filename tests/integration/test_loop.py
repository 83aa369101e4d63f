"""The feedback loop end to end: a population of simulated users chats with a real server (uvicorn, the ``openai``
client) that follows the registry; ``rewardloop loop`` rounds train DPO candidates on what they said, a trusted
reward gates promotion, and the server swaps to each promoted version. Over three rounds the users' hidden reward of
the served model rises; poisoned (flipped) feedback trains a candidate that the gate refuses; rollback returns the
server to the previous version. Plus fast tests of the round bookkeeping (claims, resume, no feedback used twice)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from rewardloop.loop import LoopConfig, run_round  # noqa: E402
from rewardloop.loop.rounds import is_heldout  # noqa: E402
from rewardloop.store import Store  # noqa: E402
from rewardloop.store.rounds import LoopState  # noqa: E402


def _pairs(store: Store, n: int, prompt: str = "Review of the lamp:") -> list[int]:
    ids = []
    for i in range(n):
        a = store.log_interaction(model_version="v0", prompt=prompt, completion=f" good {i}")
        b = store.log_interaction(model_version="v0", prompt=prompt, completion=f" bad {i}")
        fid, _ = store.add_feedback(
            response_id=a, other_response_id=b, kind="pairwise", value=1, idempotency_key=f"k-{prompt}-{i}"
        )
        ids.append(fid)
    return ids


def test_claims_are_fixed_used_once_and_late_rows_wait(tmp_path):
    with Store.open(f"sqlite:///{tmp_path / 's.db'}") as store:
        state = LoopState(store)
        store.register_model("v0", str(tmp_path), status="serving")
        first = _pairs(store, 5)
        rnd = state.start_round("dpo", "v0", state.unclaimed(("pairwise",)), run_dir=str(tmp_path / "round-1"))
        late = _pairs(store, 3, prompt="Review of the mug:")  # arrives while the round runs
        assert state.open_round()["feedback_ids"] == first  # a resume sees the same claim
        assert state.unclaimed(("pairwise",)) == late  # not claimed by the open round, not lost
        with pytest.raises(Store.StoreError, match="already running"):
            state.start_round("dpo", "v0", late, run_dir="x")
        state.finish_round(rnd["id"], "promoted", {"name": "round-1", "path": str(tmp_path)}, {"improvement": 0.1})
        assert state.serving()["name"] == "round-1"
        assert {f["id"]: f["round_id"] for f in store.feedback_since(0)} == {
            i: (1 if i in first else None) for i in first + late
        }
        assert state.unclaimed(("pairwise",)) == late
        with pytest.raises(Store.StoreError, match="not a running round"):
            state.finish_round(rnd["id"], "rejected", {"name": "again", "path": "p"}, {})
        assert state.rollback()["name"] == "v0" and state.serving()["name"] == "v0"
        retired = next(m for m in store.models() if m["name"] == "round-1")
        assert retired["status"] == "retired" and retired["metrics"]["rolled_back"] is True
        with pytest.raises(Store.StoreError, match="no parent"):
            state.rollback()


def test_heldout_split_is_stable():
    rows = [{"chosen_id": f"a{i}", "rejected_id": f"b{i}"} for i in range(400)]
    keys = ("chosen_id", "rejected_id")
    held = [is_heldout(r, keys, 0.25) for r in rows]
    swapped = [{"chosen_id": r["rejected_id"], "rejected_id": r["chosen_id"]} for r in rows]
    assert held == [is_heldout(r, keys, 0.25) for r in swapped]  # the pair, whichever side won
    assert 0.18 < sum(held) / len(held) < 0.32


def test_round_waits_for_enough_feedback_and_needs_a_model_path(tmp_path):
    with Store.open(f"sqlite:///{tmp_path / 's.db'}") as store:
        cfg = LoopConfig(store={"url": "unused"}, min_events=10)
        with pytest.raises(ValueError, match=r"model\.path: the loop starts from a saved model"):
            run_round(cfg, store)
        cfg = LoopConfig(store={"url": "unused"}, min_events=10, model={"path": str(tmp_path)})
        _pairs(store, 4)
        assert run_round(cfg, store) is None and LoopState(store).rounds() == []


# -- slow: the whole loop (benchmarks/loop_demo.py, which also makes the guide's plot) ---------------------------------


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_loop_raises_the_users_hidden_reward_and_refuses_poison(tmp_path, sft_reviews):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/ sits beside src/, not installed
    from benchmarks.loop_demo import simulate, table

    result = simulate(tmp_path, sft_reviews, rounds=3)  # the SFT model is benchmarks.loop_demo.sft_reviews's recipe
    print(table(result))
    hidden = [result["hidden_reward_start"]] + [r["hidden_reward"] for r in result["rounds"]]
    assert [r["status"] for r in result["rounds"]].count("promoted") >= 2
    assert all(r["improvement"] > 0 for r in result["rounds"] if r["status"] == "promoted")
    assert hidden[-1] > hidden[0] + 0.05  # what the users get from the served model improved
    poisoned = result["poisoned"]  # flipped labels train a worse candidate: the trusted gate refuses it
    assert poisoned["status"] == "rejected" and poisoned["improvement"] < 0 and poisoned["serving_unchanged"]
    assert poisoned["alarm"] == (poisoned["heldout_accuracy"] > 0.5)  # the stream says better, the trusted reward no
    assert result["rollback"]["serving"] != poisoned["serving_after"]["name"]  # the parent serves again
    assert result["unused_feedback"] == 0  # every feedback row was used by exactly one round


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_engagement_rounds_raise_the_hidden_reward_and_refuse_engagement_hacking(tmp_path, sft_reviews):
    """Engagement rounds with personas: users engage with one of two samples (logged propensity ½); each round trains
    a reward model on the engagement (inverse-propensity weighted) and GRPO against it; the gate needs the trusted
    reward up and the SNIPS engagement estimate not below the serving model's. Outrage users (who engage with
    negative reviews) then train an engagement-hacking candidate: its engagement estimate rises while the trusted reward falls — alarm, refused."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from benchmarks.loop_demo import REWARD_THEN_GRPO, simulate, table

    smaller = {  # the benchmark's rounds, cut to fit the slow tier (two rounds, fewer steps)
        "reward_trainer": REWARD_THEN_GRPO["reward_trainer"] | {"steps": 100, "eval_every": 100},
        "trainer": REWARD_THEN_GRPO["trainer"] | {"steps": 20, "eval_every": 20},
        "min_events": 200,
    }
    result = simulate(tmp_path, sft_reviews, rounds=2, session=250, algo="engagement", personas=True, overrides=smaller)
    print(table(result))
    hidden = [result["hidden_reward_start"]] + [r["hidden_reward"] for r in result["rounds"]]
    assert all(r["ope_candidate"] is not None and r["ope_lo"] <= r["ope_candidate"] for r in result["rounds"])
    assert any(r["status"] == "promoted" for r in result["rounds"])
    assert max(hidden[1:]) > hidden[0] + 0.05  # the population's hidden reward of what the server gives them rose
    hacked = result["poisoned"]
    assert hacked["status"] == "rejected" and hacked["improvement"] < 0 and hacked["serving_unchanged"]
    assert hacked["alarm"] and hacked["ope_candidate"] > hacked["ope_serving"]  # proxy up, gold down
    assert result["unused_feedback"] == 0


def digits(prompts, completions, **_):
    """A stand-in trusted reward: the share of digits in the answer."""
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


def test_gate_reward_forms():
    from rewardloop.loop import GateConfig

    assert GateConfig(reward="reviews_gold").reward.fn == "reviews_gold"
    assert GateConfig(reward={"model": "runs/rm/final"}).reward.model == "runs/rm/final"
    assert GateConfig(reward=digits).reward.build()(prompts=["1+1="], completions=["2"]) == [1.0]


@pytest.mark.parametrize("algo", ["dpo", "kto"])
def test_one_round_trains_a_candidate_and_records_it(tmp_path, tiny_llama, tokenizer, algo):
    """A whole round on a tiny model: claimed feedback → candidate → held-out accuracy → decision, all recorded."""
    model_dir = tmp_path / "v0"
    tiny_llama.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    with Store.open(f"sqlite:///{tmp_path / 's.db'}") as store:
        for i in range(24):
            a = store.log_interaction(model_version="v0", prompt=f"{i}+1=", completion=f" {i + 1}")
            b = store.log_interaction(model_version="v0", prompt=f"{i}+1=", completion=f" {i + 7}")
            if algo == "dpo":
                store.add_feedback(
                    response_id=a, other_response_id=b, kind="pairwise", value=1, idempotency_key=f"p{i}"
                )
            else:
                store.add_feedback(response_id=a, kind="thumbs", value=1, idempotency_key=f"u{i}")
                store.add_feedback(response_id=b, kind="thumbs", value=-1, idempotency_key=f"d{i}")
        cfg = LoopConfig.model_validate(
            {
                "algo": algo,
                "model": {"path": str(model_dir), "max_length": 32},
                "min_events": 20,
                "heldout_fraction": 0.3,
                "trainer": {"steps": 4, "batch_size": 8, "optim.lr": 1e-3, "eval_every": 4, "eval_size": 4},
                "gate": {"reward": digits, "n_prompts": 8, "gen": {"max_new_tokens": 4}},
                "root": str(tmp_path / "rounds"),
            }
        )
        record = run_round(cfg, store)
        m = record["metrics"]
        assert m["improvement"] == pytest.approx(m["reward_candidate"] - m["reward_parent"])  # the trusted gate
        assert record["status"] in ("promoted", "rejected") and record["candidate"] == "round-1"
        assert m["heldout_rows"] > 0 and m["train_rows"] > 0 and 0.0 <= m["heldout_accuracy"] <= 1.0
        assert record["status"] == ("promoted" if m["improvement"] > 0 else "rejected")
        candidate = next(v for v in store.models() if v["name"] == "round-1")
        assert candidate["parent_id"] == next(v["id"] for v in store.models() if v["name"] == "v0")
        assert all(f["round_id"] == record["id"] for f in store.feedback_since(0))
        assert run_round(cfg, store) is None  # nothing new to learn from


def test_a_crash_mid_round_resumes_the_same_round(tmp_path, tiny_llama, tokenizer, monkeypatch):
    """The evaluation crashes after training: the round stays open with its claim; the next call resumes it (the
    trainer from its run directory), late feedback waits for the next round, nothing is used twice."""
    import rewardloop.loop.rounds as rounds

    model_dir = tmp_path / "v0"
    tiny_llama.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    with Store.open(f"sqlite:///{tmp_path / 's.db'}") as store:
        first = _pairs(store, 12, prompt="1+1=") + _pairs(store, 12, prompt="2+2=")
        cfg = LoopConfig.model_validate(
            {
                "model": {"path": str(model_dir), "max_length": 32},
                "min_events": 20,
                "heldout_fraction": 0.3,
                "trainer": {"steps": 2, "batch_size": 8, "eval_every": 2, "eval_size": 4, "run.save_every": 1},
                "root": str(tmp_path / "rounds"),
            }
        )
        real = rounds.evaluate
        monkeypatch.setattr(rounds, "evaluate", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("crash")))
        with pytest.raises(RuntimeError, match="crash"):
            run_round(cfg, store)
        open_round = LoopState(store).open_round()
        assert open_round["feedback_ids"] == first and (tmp_path / "rounds" / "round-1").exists()
        late = _pairs(store, 3, prompt="3+3=")
        monkeypatch.setattr(rounds, "evaluate", real)
        record = run_round(cfg, store)
        assert record["id"] == open_round["id"] and record["feedback_ids"] == first
        assert {f["id"] for f in store.feedback_since(0) if f["round_id"] == record["id"]} == set(first)
        assert LoopState(store).unclaimed(("pairwise",)) == late


def test_proxy_gold_alarm():
    from rewardloop.loop.rounds import proxy_gold_alarm

    assert proxy_gold_alarm({"heldout_accuracy": 0.6, "reward_parent": 0.5, "reward_candidate": 0.3})
    assert not proxy_gold_alarm({"heldout_accuracy": 0.6, "reward_parent": 0.5, "reward_candidate": 0.7})
    assert not proxy_gold_alarm({"heldout_accuracy": 0.4, "reward_parent": 0.5, "reward_candidate": 0.3})
    assert not proxy_gold_alarm({"heldout_accuracy": 0.9})  # no trusted reward: nothing to compare with


@pytest.mark.parametrize("algo", ["ratings", "engagement"])
def test_reward_model_then_grpo_round(tmp_path, tiny_llama, tokenizer, algo):
    """Ratings / engagement: the round trains a reward model on the feedback, then GRPO against it; recorded as the
    other rounds are."""
    model_dir = tmp_path / "v0"
    tiny_llama.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    with Store.open(f"sqlite:///{tmp_path / 's.db'}") as store:
        for i in range(24):
            for good, text in ((True, f" {i + 1}"), (False, f" {i + 7}x")):
                rid = store.log_interaction(
                    model_version="v0", prompt=f"{i}+1=", completion=text, propensity=0.5 if good else 0.25
                )
                if algo == "ratings":
                    fb = {"kind": "rating", "value": 5 if good else 1}
                else:
                    fb = {"kind": "engagement", "event": "like" if good else "skip", "value": 1}
                store.add_feedback(response_id=rid, idempotency_key=f"{algo}-{i}-{good}", **fb)
        cfg = LoopConfig.model_validate(
            {
                "algo": algo,
                "model": {"path": str(model_dir), "max_length": 32},
                "min_events": 40,
                "heldout_fraction": 0.25,
                "reward_trainer": {"steps": 3, "batch_size": 8, "eval_every": 3},
                "trainer": {"steps": 2, "prompts_per_step": 4, "group_size": 2, "eval_every": 2, "eval_size": 4},
                "gate": {"ope": "dr"},  # engagement: DR with the round's reward model (ratings rounds skip OPE)
                "root": str(tmp_path / "rounds"),
            }
        )
        record = run_round(cfg, store)
        assert record["status"] in ("promoted", "rejected") and record["metrics"]["train_rows"] > 0
        m = record["metrics"]
        if algo == "engagement":  # no trusted reward: the OPE gain decides, and the lower bound must clear serving
            assert m["ope_lo"] <= m["ope_candidate"] <= m["ope_hi"] and m["ope_n"] > 0
            assert m["improvement"] == pytest.approx(m["ope_candidate"] - m["ope_serving"])
            assert (record["status"] == "promoted") == (m["improvement"] > 0 and m["ope_lo"] >= m["ope_serving"])
        else:
            assert "ope_candidate" not in m
        assert (tmp_path / "rounds" / "round-1" / "reward").is_dir() and (
            tmp_path / "rounds" / "round-1" / "policy"
        ).is_dir()
        assert all(f["round_id"] == record["id"] for f in store.feedback_since(0))
