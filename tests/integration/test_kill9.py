"""Kill-9 harness: every trainer, run through the CLI in a subprocess, is SIGKILLed at seeded random points — in
generation or the training forward pass, in the optimizer step, in a checkpoint or final-model write — and resumed
with ``--resume`` after each kill, until it finishes. The result must be the uninterrupted run's: bit-identical final
weights, the same metrics.jsonl and samples.jsonl rows (each step logged once, none lost), and no temporary or
half-written directory left under the run.

The kills are real (``os.kill(pid, SIGKILL)`` from inside the process: no ``finally``, no flush); the worker
(kill9_worker.py) records where each probe fires in the uninterrupted run, and each kill is drawn from the points a
resumed process replays. The seed is in each test's id; ``KILL9_SEED=N`` draws other points.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tests.integration.test_resume import MODEL, OPTIM, SAVE_EVERY, STEPS, config, dpo_config, grpo_config, ppo_config

from rewardloop.algorithms.reward_model import RewardModelConfig
from rewardloop.config import RunConfig, dump_config
from rewardloop.envs.tasks import TaskConfig
from rewardloop.runs import RunDir, read_metrics

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("KILL9_SEED", "15"))
WORKER = Path(__file__).with_name("kill9_worker.py")
CHECKPOINT_WRITE = ("ckpt-model", "ckpt-file", "ckpt-rename", "ckpt-latest", "final")


def reward_config(root, name: str) -> RewardModelConfig:
    """Two ensemble members on one step axis (as in test_resume): kills land in either member."""
    pairs = root / "rm-prefs.jsonl"
    rows = [{"prompt": f"{i}+{i}=", "chosen": str(2 * i), "rejected": str(2 * i + 1)} for i in range(40)]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return RewardModelConfig(
        model=MODEL, task=TaskConfig(name="dataset", path=str(pairs), n_test=8), optim=OPTIM, steps=STEPS,
        batch_size=8, ensemble=2, eval_every=100,
        run=RunConfig(root=str(root), name=name, save_every=SAVE_EVERY, progress=False),
    )  # fmt: skip


# trainer → (CLI command, config builder, final model dirs)
TRAINERS = {
    "sft": ("sft", config, ["policy"]),
    "dpo": ("dpo", dpo_config, ["policy"]),
    "ppo": ("ppo", ppo_config, ["policy", "value"]),
    "grpo": ("grpo", grpo_config, ["policy"]),
    "reward": ("reward", reward_config, ["reward-0", "reward-1"]),
}
# the kill points, in order: generation or the training forward pass (sft / dpo / reward: their evaluation may
# generate too), the optimizer step, a checkpoint or final-model write
KILLS = [("forward", "generate"), ("optimizer",), CHECKPOINT_WRITE]
VOLATILE = ("time", "per_s", "cpu_s")  # clock metrics (time, time/*, *tokens_per_s, cpu_s): differ between any two runs


def run_worker(command: str, cfg_file: Path, resume: bool = False, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, **env, "REWARDLOOP_TEST_THREADS": "1"}
    full["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH")]))
    args = [sys.executable, str(WORKER), command, str(cfg_file), *(["--resume"] if resume else [])]
    return subprocess.run(args, env=full, capture_output=True, text=True, timeout=300)


def write_config(trainer: str, root: Path, name: str) -> Path:
    _, make, *_ = TRAINERS[trainer]
    path = root / f"{name}.yaml"
    path.write_text(dump_config(make(root, name)))
    return path


def resumable_step(run_dir: Path) -> int:
    """The step a resumed process continues from: the newest checkpoint whose state reads (-1: none, start over)."""
    ckpt = RunDir(run_dir).latest_checkpoint()
    return json.loads((ckpt / "state.json").read_text())["step"] if ckpt is not None else -1


def replayed(event: tuple[str, str], trainer: str, run_dir: Path, resume_step: int) -> bool:
    """Will a process resumed at ``resume_step`` reach this event of the uninterrupted run?"""
    label = event[1]
    if label.startswith("final/"):  # final models are saved by every resumed process (reward: unless saved already)
        return not (trainer == "reward" and (run_dir / label / "config.json").exists())
    return int(label) > resume_step


def draw(events: list[tuple[str, str]], points: tuple[str, ...], trainer, run_dir, rng, share: float) -> str | None:
    """A random event of ``points`` that a resumed process replays, as ``point@label#k`` (None: there is none), from
    the first ``share`` of them (so that an early kill leaves room for the later ones)."""
    resume_step = resumable_step(run_dir) if run_dir.exists() else -1
    nth: Counter = Counter()
    choices = []
    for ev in events:
        nth[ev] += 1
        if ev[0] in points and replayed(ev, trainer, run_dir, resume_step):
            choices.append(f"{ev[0]}@{ev[1]}#{nth[ev]}")
    return rng.choice(choices[: max(1, round(share * len(choices)))]) if choices else None


def rows(run_dir: Path, name: str) -> list[dict]:
    return [{k: v for k, v in r.items() if not any(w in k for w in VOLATILE)} for r in read_metrics(run_dir, name)]


def leftovers(run_dir: Path) -> list[str]:
    """Temporary / half-written paths anywhere under the run directory (``.X.tmp-*``, ``.X.old-*``)."""
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name)


def duplicated(actual: list[dict], expected: list[dict]) -> int:
    """Rows of ``actual`` beyond the number of times the same step appears in ``expected``."""
    want, got = Counter(r["step"] for r in expected), Counter(r["step"] for r in actual)
    return sum(max(0, n - want[s]) for s, n in got.items())


@pytest.fixture(scope="module")
def tally(request):
    """Counts over the module, reported in one line at its end."""
    counts: Counter = Counter()
    yield counts
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    line = (
        f"kill-9 harness (seed {SEED}): {counts['trainers']} trainers, {counts['kills']} kills "
        f"({', '.join(f'{k} {counts[k]}' for k in sorted(counts) if k.startswith('at '))}), "
        f"{counts['resumes']} resumes, {counts['duplicated']} duplicated rows, {counts['lost']} lost rows, "
        f"{counts['leftovers']} leftover partial writes, {counts['stale latest']} stale `latest` pointers"
    )
    with capture.global_and_fixture_disabled():  # shown with -q too, not only on failure
        print(f"\n{line}")


@pytest.mark.parametrize("trainer", list(TRAINERS), ids=[f"{t}-seed{SEED}" for t in TRAINERS])
def test_sigkill_at_random_points_then_resume_matches_an_uninterrupted_run(tmp_path, trainer, tally):
    command, _, finals = TRAINERS[trainer]
    rng = random.Random(f"{SEED}-{trainer}")
    t0 = time.perf_counter()

    # 1. The uninterrupted run, recording every probe event.
    record = tmp_path / "events.jsonl"
    straight = run_worker(command, write_config(trainer, tmp_path, "straight"), KILL9_RECORD=str(record))
    assert straight.returncode == 0, straight.stderr[-3000:]
    events = [tuple(json.loads(line)) for line in record.read_text().splitlines()]
    seen = Counter(e[0] for e in events)
    assert all(any(seen[p] for p in points) for points in KILLS), seen
    assert seen["ckpt-file"] and seen["final"], seen

    # 2. Kill in generation / forward, then in the optimizer step, then in a checkpoint write; resume after each.
    cfg_file = write_config(trainer, tmp_path, "killed")
    run_dir = tmp_path / "killed"
    log = []
    for n, points in enumerate(KILLS):
        at = draw(events, points, trainer, run_dir, rng, share=(n + 1) / 3)
        assert at is not None, f"no {points} event left to kill at after {log}"
        proc = run_worker(command, cfg_file, resume=n > 0, KILL9_AT=at)
        log.append(f"{'resume' if n else 'start'} killed at {at} (resumable step then {resumable_step(run_dir)})")
        assert proc.returncode == -signal.SIGKILL, f"seed {SEED}: not killed at {at}: {proc.stderr[-3000:]}"
        tally["kills"] += 1
        tally[f"at {at.split('@')[0]}"] += 1
        tally["resumes"] += n > 0
    done = run_worker(command, cfg_file, resume=True)
    tally["resumes"] += 1
    tally["trainers"] += 1
    context = f"seed {SEED}, {trainer}: " + "; ".join(log)
    assert done.returncode == 0, f"{context}\n{done.stderr[-3000:]}"

    # 3. The same run as the uninterrupted one.
    for name in finals:
        expected = load_file(tmp_path / "straight" / "final" / name / "model.safetensors")
        actual = load_file(run_dir / "final" / name / "model.safetensors")
        assert expected.keys() == actual.keys(), context
        different = [k for k in expected if not torch.equal(expected[k], actual[k])]
        assert not different, f"{context}: final/{name} differs in {different[:5]}"
    for log_name in ("metrics.jsonl", "samples.jsonl"):
        expected, actual = rows(tmp_path / "straight", log_name), rows(run_dir, log_name)
        dup = duplicated(actual, expected)
        lost = duplicated(expected, actual)
        tally["duplicated"] += dup
        tally["lost"] += lost
        assert dup == 0 and lost == 0, f"{context}: {log_name}: {dup} duplicated, {lost} lost rows"
        assert [r["step"] for r in actual] == [r["step"] for r in expected], f"{context}: {log_name} step order"
        assert actual == expected, f"{context}: {log_name} rows differ from the uninterrupted run's"

    # 4. Nothing half-written left: only whole checkpoints, `latest` on the last one, whole final models.
    left = leftovers(run_dir)
    tally["leftovers"] += len(left)
    assert not left, f"{context}: left behind {left}"
    ckpts = run_dir / "checkpoints"
    names = sorted(p.name for p in ckpts.iterdir())
    last = STEPS * (2 if trainer == "reward" else 1)
    assert names[0] == "latest" and all(n.startswith("step-") for n in names[1:]), f"{context}: {names}"
    assert names[-1] == f"step-{last:07d}", f"{context}: {names}"
    # `latest` names the newest checkpoint (a kill between a checkpoint's rename and the pointer's update is repaired
    # by the resume that loads it)
    pointer = (ckpts / "latest").read_text().strip()
    assert pointer in names and (ckpts / pointer / "state.json").is_file(), f"{context}: latest names {pointer!r}"
    tally["stale latest"] += pointer != names[-1]
    assert pointer == names[-1], f"{context}: latest names {pointer!r}, the newest is {names[-1]!r}"
    assert sorted(p.name for p in (run_dir / "final").iterdir()) == sorted(
        p.name for p in (tmp_path / "straight" / "final").iterdir()
    ), context
    print(f"{context}; {time.perf_counter() - t0:.1f}s")
