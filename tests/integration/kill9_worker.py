"""Subprocess worker of the kill-9 harness (tests/integration/test_kill9.py): ``rewardloop <command> --config F``
through the real CLI, with probes that record — or SIGKILL the process at — chosen points of training.

    python kill9_worker.py COMMAND CONFIG.yaml [--resume]

Environment:

``KILL9_RECORD=FILE``
    append every probe event to FILE as one JSON line ``[point, label]`` (the uninterrupted run records them all).
``KILL9_AT=point@label#k``
    ``os.kill(os.getpid(), SIGKILL)`` at the ``k``-th event ``point`` labelled ``label``: a real kill of this process,
    no ``finally``, no atexit, no flush of anything Python still holds.

Points:

``forward``      the training loss's forward pass (sft, dpo, reward): the kill fires inside the model, halfway
                 through its modules.
``generate``     sampling (ppo, grpo: rollouts and evaluation): the kill fires at the first decode step, after the
                 prefill.
``optimizer``    ``clip_and_step``: the kill fires right after ``optimizer.step()`` has changed the weights in memory,
                 before the scheduler steps.
``ckpt-model``   a checkpoint's model directory is written, not yet renamed into the checkpoint's temporary directory.
``ckpt-file``    ``torch.save`` of an optimizer / RNG file inside a checkpoint: half of its bytes are written, then
                 the kill (a torn file).
``ckpt-rename``  the checkpoint's temporary directory is complete, not yet renamed to ``step-N``.
``ckpt-latest``  ``step-N`` is in place; ``latest``'s temporary file is written, not yet renamed over ``latest``.
``final``        a ``final/<name>`` model is written into its temporary directory, not yet renamed.

Labels make one run's events comparable with another's: an event inside ``save_checkpoint(N)`` is labelled N; a
``final`` event ``final/<name>``; every other event ``last logged step + 1`` (a resumed run starts counting from the
step it resumed at, so it replays the uninterrupted run's events with labels above that step, in the same order).
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
from collections import Counter
from pathlib import Path

import torch

import rewardloop.models.loading as loading
import rewardloop.rollout.engine as engine
import rewardloop.runs as runs
from rewardloop import cli
from rewardloop.runs import RunDir

MODULES = {
    "sft": "rewardloop.algorithms.sft",
    "dpo": "rewardloop.algorithms.dpo",
    "ppo": "rewardloop.algorithms.ppo",
    "grpo": "rewardloop.algorithms.grpo",
    "reward": "rewardloop.algorithms.reward_model",
}
# the function whose call is one training forward pass, per trainer (ppo and grpo are killed in generation instead)
FORWARD = {"sft": "nll_loss", "dpo": "dpo_step", "reward": "_pair_batch"}


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class Probes:
    def __init__(self) -> None:
        self.record = os.environ.get("KILL9_RECORD")
        at = os.environ.get("KILL9_AT")
        self.target = None
        if at:
            point, rest = at.split("@", 1)
            label, k = rest.rsplit("#", 1)
            self.target = (point, label, int(k))
        self.counts: Counter = Counter()
        self.last_logged = -1  # the step of the last metrics row (or the step the run resumed at)
        self.ckpt_step: int | None = None  # inside save_checkpoint(N): N

    def label(self) -> str:
        return str(self.ckpt_step if self.ckpt_step is not None else self.last_logged + 1)

    def event(self, point: str, label: str | None = None) -> bool:
        """Count (and record) one event; True when this is the one to kill at."""
        label = self.label() if label is None else label
        self.counts[point, label] += 1
        if self.record:
            with open(self.record, "a") as f:
                f.write(json.dumps([point, label]) + "\n")
        return self.target == (point, label, self.counts[point, label])


def install(command: str, probes: Probes) -> None:
    module = __import__(MODULES[command], fromlist=["train"])

    # labels: follow the logged steps, the resumed step and the checkpoint being written
    real_log, real_drop, real_save_ckpt = RunDir.log, RunDir.drop_logs_after, RunDir.save_checkpoint

    def log(self, step, metrics):
        probes.last_logged = step
        return real_log(self, step, metrics)

    def drop_logs_after(self, step):
        probes.last_logged = step  # resume (or a reward-model member starting over): the next step is step + 1
        return real_drop(self, step)

    def save_checkpoint(self, step, *args, **kwargs):
        probes.ckpt_step = step
        try:
            return real_save_ckpt(self, step, *args, **kwargs)
        finally:
            probes.ckpt_step = None

    RunDir.log, RunDir.drop_logs_after, RunDir.save_checkpoint = log, drop_logs_after, save_checkpoint

    def kill_inside(model, nth_forward: int, where: str) -> None:
        """Arm a hook that kills the process at the ``nth_forward`` call of ``model`` (or of a module halfway down)."""
        modules = list(model.modules())
        target = modules[len(modules) // 2] if where == "middle" else model
        calls = [0]

        def hook(*_):
            calls[0] += 1
            if calls[0] >= nth_forward:
                die()

        target.register_forward_pre_hook(hook)

    # forward: the training loss of sft / dpo / reward
    if command in FORWARD:
        real_fwd = getattr(module, FORWARD[command])

        def forward(model, *args, **kwargs):
            if probes.event("forward"):
                kill_inside(model, 1, "middle")
            return real_fwd(model, *args, **kwargs)

        setattr(module, FORWARD[command], forward)

    # generate: every module that imported rewardloop.rollout.engine.generate
    real_generate = engine.generate

    def generate(model, *args, **kwargs):
        if probes.event("generate"):
            kill_inside(model, 2, "model")  # call 1 is the prefill, call 2 the first decode step
        return real_generate(model, *args, **kwargs)

    for name, mod in list(sys.modules.items()):
        if name.startswith("rewardloop") and getattr(mod, "generate", None) is real_generate:
            mod.generate = generate

    # optimizer: kill after opt.step() has updated the weights, before the scheduler steps
    real_step = module.clip_and_step

    def clip_and_step(model, opt, *args, **kwargs):
        if probes.event("optimizer"):
            opt.register_step_post_hook(lambda *_: die())
        return real_step(model, opt, *args, **kwargs)

    module.clip_and_step = clip_and_step

    # checkpoint writes
    real_torch_save = torch.save

    def torch_save(obj, path, *args, **kwargs):
        if probes.ckpt_step is not None and probes.event("ckpt-file"):
            buf = io.BytesIO()
            real_torch_save(obj, buf, *args, **kwargs)
            data = buf.getvalue()
            with open(path, "wb") as f:
                f.write(data[: len(data) // 2])
                f.flush()
            die()
        return real_torch_save(obj, path, *args, **kwargs)

    torch.save = torch_save

    real_model_replace = loading.replace_dir

    def model_replace(tmp, target):
        if probes.ckpt_step is not None:
            if probes.event("ckpt-model"):
                die()
        elif Path(target).parent.name == "final" and probes.event("final", f"final/{Path(target).name}"):
            die()
        return real_model_replace(tmp, target)

    loading.replace_dir = model_replace

    real_ckpt_replace = runs.replace_dir

    def ckpt_replace(tmp, target):
        if probes.event("ckpt-rename"):
            die()
        return real_ckpt_replace(tmp, target)

    runs.replace_dir = ckpt_replace

    real_write_atomic = runs._write_atomic

    def write_atomic(path, text):
        if path.name == "latest" and probes.event("ckpt-latest"):
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")  # what _write_atomic writes before its rename
            tmp.write_text(text)
            die()
        return real_write_atomic(path, text)

    runs._write_atomic = write_atomic


def main(argv: list[str]) -> int:
    torch.set_num_threads(1)
    command, config, *rest = argv
    install(command, Probes())
    return cli.main([command, "--config", config, *rest])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
