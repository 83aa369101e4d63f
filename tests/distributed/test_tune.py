"""``rewardloop tune``: the search-space parser (no Ray), and a real Ray Tune search where ASHA stops a bad trial."""

from __future__ import annotations

import csv
import json
import threading
import time

import pytest
import yaml

from rewardloop.cli import COMMANDS
from rewardloop.config import ConfigError, load_config
from rewardloop.distributed.tune import (
    TRAINERS,
    Domain,
    TuneConfig,
    check_space,
    follow_metrics,
    parse_domain,
    parse_space,
)

# llama-1m SFT on one-digit sums: 40 steps, evaluated every 10 (a few seconds per trial)
TINY_SFT = {
    "model.preset": "llama-1m",
    "model.max_length": 16,
    "model.device": "cpu",
    "task.digits": [1, 1],
    "task.n_train": 70,
    "task.n_test": 30,
    "optim.warmup_steps": 0,
    "optim.schedule": "constant",
    "gen.max_new_tokens": 4,
    "steps": 40,
    "batch_size": 32,
    "eval_every": 10,
    "eval_size": 10,
}


@pytest.mark.parametrize(
    ("expr", "domain"),
    [
        ("loguniform(1e-5, 1e-3)", Domain("loguniform", (1e-5, 1e-3))),
        ("uniform(0, 0.1)", Domain("uniform", (0, 0.1))),
        ("uniform(-1, 1)", Domain("uniform", (-1, 1))),
        ("randint(2, 9)", Domain("randint", (2, 9))),
        ("choice([4, 8])", Domain("choice", ([4, 8],))),
        (" choice(['grpo', 'dr_grpo']) ", Domain("choice", (["grpo", "dr_grpo"],))),
        ("grid([0.0, 0.04])", Domain("grid", ([0.0, 0.04],))),
    ],
)
def test_space_expressions_parse(expr, domain):
    assert parse_domain("k", expr) == domain


@pytest.mark.parametrize(
    ("expr", "why"),
    [
        ("__import__('os').system('true')", "not a call like"),
        ("loguniform(0, 1e-3)", "LOW > 0"),
        ("uniform(0.1, 0.01)", "LOW < HIGH"),
        ("uniform(1)", "two numbers"),
        ("uniform(low=0, high=1)", "not a call like"),
        ("randint(1.5, 4)", "two integers"),
        ("choice([])", "non-empty list"),
        ("choice(4, 8)", "one non-empty list"),
        ("normal(0, 1)", "unknown distribution 'normal'"),
        ("choice([x, y])", "literal"),
        ("loguniform(1e-5, 1e-3", "not a valid expression"),
        (0.001, "not an expression"),
    ],
)
def test_bad_space_expressions_are_rejected_naming_the_key(expr, why):
    with pytest.raises(ConfigError, match=why) as err:
        parse_space({"optim.lr": expr})
    assert "space.optim.lr" in str(err.value) and repr(expr) in str(err.value)


def test_the_command_line_form_of_a_space_flattens_to_dotted_keys():
    cfg = load_config(
        TuneConfig,
        None,
        [
            "command=grpo",
            "space.optim.lr=loguniform(1e-5, 1e-3)",
            "space.group_size=choice([4, 8])",
            "overrides.steps=5",
        ],
    )
    assert cfg.space == {"optim.lr": "loguniform(1e-5, 1e-3)", "group_size": "choice([4, 8])"}
    assert cfg.overrides == {"steps": 5}
    assert parse_space(cfg.space)["group_size"] == Domain("choice", ([4, 8],))


def test_every_value_at_the_space_edges_is_checked_against_the_trainer_config(tmp_path):
    base = tmp_path / "sft.yaml"
    base.write_text(yaml.safe_dump({"steps": 7, "optim": {"lr": 1e-3}}))
    ok = TuneConfig(command="sft", base=str(base), space={"optim.lr": "loguniform(1e-5, 1e-2)"})
    assert check_space(ok, parse_space(ok.space)).steps == 7
    bad = TuneConfig(command="sft", base=str(base), space={"batch_size": "choice([8, 0])"})
    with pytest.raises(ConfigError, match=r"space.batch_size = 'choice\(\[8, 0\]\)': value 0 is refused") as err:
        check_space(bad, parse_space(bad.space))
    assert "batch_size = 0" in str(err.value)  # the trainer config's own message: key, value, what is allowed
    typo = TuneConfig(command="sft", space={"optim.learning_rate": "uniform(0.1, 0.2)"})
    with pytest.raises(ConfigError, match=r"unknown key 'optim\.learning_rate'"):
        check_space(typo, parse_space(typo.space))


def test_trainers_agree_with_the_cli_command_table():
    for name, trainer in TRAINERS.items():
        cmd = COMMANDS[name]
        assert (trainer.module, trainer.config, trainer.defaults) == (cmd.module, cmd.config, cmd.defaults), name


def test_a_trial_reports_each_row_with_the_metric_as_the_trainer_writes_it(tmp_path):
    """What Tune receives from a trial: the eval rows of metrics.jsonl in order, while it is being written (a row
    torn mid-write is reported once it is complete), and the rows written last before the trainer finished."""
    rows = [
        {"step": s, "train/loss": 1.0 / (s + 1)} | ({"eval/accuracy": s / 10} if s % 2 == 0 else {}) for s in range(6)
    ]
    reported: list[dict[str, float]] = []
    seen_while_writing, streamed = threading.Event(), []

    def trainer() -> None:
        with open(tmp_path / "metrics.jsonl", "a") as f:
            for row in rows:
                line = json.dumps(row) + "\n"
                f.write(line[:5])  # a torn line, as a reader may find it mid-write
                f.flush()
                time.sleep(0.02)
                f.write(line[5:])
                f.flush()
                if row["step"] == 2:  # wait until the follower has reported step 0 and 2: it streams
                    streamed.append(seen_while_writing.wait(5))

    def report(metrics: dict[str, float]) -> None:
        reported.append(metrics)
        if metrics["step"] == 2:
            seen_while_writing.set()

    writer = threading.Thread(target=trainer)
    writer.start()
    n = follow_metrics(tmp_path, "eval/accuracy", report, writer.is_alive, poll_s=0.005)
    writer.join()
    assert streamed == [True]  # steps 0 and 2 reached Tune before the trainer wrote step 3
    assert n == 3 and [r["step"] for r in reported] == [0, 2, 4]
    assert reported[2] == {"step": 4, "train/loss": 0.2, "eval/accuracy": 0.4}


@pytest.fixture(scope="module")
def asha_search(tmp_path_factory):
    """Two trials of tiny SFT, one after the other: lr 3e-3 learns, lr 1e-7 does not move (same seed, same data)."""
    from rewardloop.distributed.tune import tune

    cfg = TuneConfig(
        command="sft",
        overrides=TINY_SFT,
        space={"optim.lr": "grid([3e-3, 1e-7])"},
        trials=1,
        metric="eval/loss",
        mode="min",
        scheduler="asha",
        grace_period=10,
        reduction_factor=2,
        max_concurrent=1,
        root=str(tmp_path_factory.mktemp("tune")),
        name="asha",
    )
    return tune(cfg)


def table_rows(result) -> list[dict[str, str]]:
    with open(result["tune_dir"] / "results.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.ray
@pytest.mark.slow
def test_each_trial_is_a_run_directory_and_the_table_ranks_them(asha_search):
    result = asha_search
    rows = table_rows(result)
    assert len(rows) == 2
    losses = [float(r["eval/loss"]) for r in rows]
    assert losses == sorted(losses) and losses[0] < losses[1]  # min mode: best first
    assert float(rows[0]["optim.lr"]) == 3e-3 and result["best_config"] == {"optim.lr": 3e-3}
    assert result["best_metric"] == losses[0]
    for r in rows:  # a normal run directory, trained with the trial's sampled value
        run_dir = result["tune_dir"] / r["run_dir"]
        trial_cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert trial_cfg["optim"]["lr"] == float(r["optim.lr"]) and trial_cfg["steps"] == 40
        assert (run_dir / "metrics.jsonl").exists()
    good = result["tune_dir"] / rows[0]["run_dir"]
    assert (good / "final" / "policy" / "config.json").exists()
    assert result["table"].read_text().count("| trials/") == 2
    assert all(p.exists() and p.stat().st_size > 0 for p in result["plots"])


@pytest.mark.ray
@pytest.mark.slow
def test_asha_stops_the_trial_that_does_not_learn(asha_search):
    result = asha_search
    rows = {r["optim.lr"]: r for r in table_rows(result)}
    good, bad = rows["0.003"], rows["1e-07"]
    # what Tune recorded: the good trial reported through step 40; ASHA stopped the bad one at its first rung
    assert (good["status"], int(good["step"])) == ("done", 40)
    assert bad["status"] == "stopped early" and int(bad["step"]) < 40
    assert float(good["eval/loss"]) < float(bad["eval/loss"])


def test_the_last_steps_row_is_reported_only_after_the_trainer_returns(tmp_path):
    """ASHA stops a trial that reports step max_t; reporting it while the trainer still writes final/ would kill it."""
    finished = threading.Event()
    order: list[tuple[int, bool]] = []

    def trainer() -> None:
        with open(tmp_path / "metrics.jsonl", "a") as f:
            for s in (0, 2, 4):
                f.write(json.dumps({"step": s, "eval/accuracy": s / 10}) + "\n")
                f.flush()
        time.sleep(0.2)  # the final model being written after the last row
        finished.set()

    writer = threading.Thread(target=trainer)
    writer.start()
    follow_metrics(tmp_path, "eval/accuracy", lambda m: order.append((m["step"], finished.is_set())), writer.is_alive,
                   poll_s=0.005, hold_from=4)  # fmt: skip
    writer.join()
    assert [s for s, _ in order] == [0, 2, 4]
    assert order[-1] == (4, True)
