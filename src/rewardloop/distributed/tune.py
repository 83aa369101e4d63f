"""``rewardloop tune``: hyper-parameter search over any trainer with Ray Tune (random / grid search, ASHA or FIFO).

A search is a trainer command, its config (a YAML ``base`` plus fixed ``overrides``) and a ``space`` of dotted keys
of that config, each a small expression::

    command: sft
    base: configs/sft/arithmetic.yaml
    overrides: {steps: 200, eval_every: 20}
    space:
      optim.lr: loguniform(1e-4, 1e-2)      # also uniform(LOW, HIGH), randint(LOW, HIGH) (HIGH excluded),
      batch_size: choice([32, 64])          # choice([A, B, ...]) sampled, grid([A, B, ...]) every value
    metric: eval/loss
    mode: min
    scheduler: asha                         # ASHA (Li et al. 2020, arXiv:1810.05934) stops trials early

Expressions are parsed with ``ast`` (a call of one of the names above on literal arguments), never evaluated.
Every trial is a normal run directory written by the trainer (``<tune dir>/trials/<trial id>/``: config.yaml,
metrics.jsonl, final/...). The trial follows its own ``metrics.jsonl`` and reports each row that holds ``metric``
to Tune, with the trainer's ``step`` as ASHA's time axis, so the run directory is the only interface between the
trainer and Tune (any trainer works, unchanged). The tune directory gets::

    <root>/<name>/config.yaml          this search's resolved config
    <root>/<name>/trials/<trial id>/   one run directory per trial
    <root>/<name>/ray/                 Ray Tune's experiment state
    <root>/<name>/results.csv, .md     one row per trial, best first: the sampled values, the metric, its step
    <root>/<name>/best.json            the best trial's values, metric and run directory
    <root>/<name>/plots/               metric vs step (one curve per trial); metric vs each searched key
"""

from __future__ import annotations

import ast
import csv
import functools
import importlib
import json
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import Field, field_validator

from rewardloop.config import ConfigError, Section, dump_config, load_config
from rewardloop.runs import read_metrics
from rewardloop.tracking import flatten, numeric


class Trainer(NamedTuple):
    module: str
    config: str
    defaults: tuple[str, ...] = ()


# The trainer commands a search can run (the same entries as cli.COMMANDS, which distributed/ may not import;
# tests/distributed/test_tune.py checks that they agree).
TRAINERS: dict[str, Trainer] = {
    "sft": Trainer("rewardloop.algorithms.sft", "SFTConfig"),
    "reward": Trainer("rewardloop.algorithms.reward_model", "RewardModelConfig"),
    "ppo": Trainer("rewardloop.algorithms.ppo", "PPOConfig"),
    "grpo": Trainer("rewardloop.algorithms.grpo", "GRPOConfig"),
    "rloo": Trainer("rewardloop.algorithms.grpo", "GRPOConfig", ("estimator=rloo",)),
    "dpo": Trainer("rewardloop.algorithms.dpo", "DPOConfig"),
    "kto": Trainer("rewardloop.algorithms.kto", "KTOConfig"),
}


class TuneConfig(Section):
    """A hyper-parameter search: which trainer, its config, the space, the budget and the early-stopping rule."""

    command: Literal["sft", "reward", "ppo", "grpo", "rloo", "dpo", "kto"] = Field(
        "grpo", description="the trainer to tune"
    )
    base: str | None = Field(None, description="the trainer's YAML config (configs/<command>/*.yaml); none: defaults")
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="fixed values over `base` for every trial, e.g. {steps: 100}"
    )
    space: dict[str, Any] = Field(
        default_factory=dict,
        description="dotted key → uniform(a, b) | loguniform(a, b) | randint(a, b) | choice([..]) | grid([..])",
    )
    trials: int = Field(4, ge=1, description="samples of the space (a grid() key multiplies them by its length)")
    metric: str = Field("eval/accuracy", description="a metric the trainer logs to metrics.jsonl")
    mode: Literal["max", "min"] = "max"
    scheduler: Literal["asha", "fifo"] = "asha"
    grace_period: int = Field(10, ge=1, description="ASHA: trainer steps before a trial may be stopped")
    reduction_factor: int = Field(2, ge=2, description="ASHA: 1/reduction_factor of the trials go on at each rung")
    max_concurrent: int = Field(2, ge=1, description="trials running at once")
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)
    root: str = "runs"
    name: str | None = Field(None, description="tune directory under `root` (default: tune-<command>-<time>)")
    seed: int = Field(0, description="seeds the sampling of the space; every trial's run.seed is the base config's")
    ray_address: str | None = Field(None, description="join a running Ray cluster ('auto', ray://...); none: local")

    @field_validator("space", "overrides", mode="after")
    @classmethod
    def _flat(cls, v: dict[str, Any]) -> dict[str, Any]:
        """``space.optim.lr=...`` on the command line nests; flatten to ``{"optim.lr": ...}``."""
        return flatten(v)


# -- the search space: parsed, never evaluated ---------------------------------------------------------------------
class Domain(NamedTuple):
    kind: str  # uniform | loguniform | randint | choice | grid
    args: tuple[Any, ...]  # (low, high) or (values,)

    def corners(self) -> list[Any]:
        """Values at the domain's edges (every value of a list): each is checked against the trainer's config."""
        if self.kind in ("choice", "grid"):
            return list(self.args[0])
        low, high = self.args
        return [low, high - 1] if self.kind == "randint" else [low, high]


SPACE_HELP = "write uniform(LOW, HIGH), loguniform(LOW, HIGH), randint(LOW, HIGH), choice([A, B]) or grid([A, B])"


def _check_domain(kind: str, args: tuple[Any, ...]) -> str | None:
    """What is wrong with ``kind(*args)``, or None."""
    if kind in ("choice", "grid"):
        if len(args) != 1 or not isinstance(args[0], list | tuple) or not args[0]:
            return f"{kind} takes one non-empty list"
        return None
    if kind not in ("uniform", "loguniform", "randint"):
        return f"unknown distribution {kind!r}"
    if len(args) != 2 or not all(isinstance(a, int | float) and not isinstance(a, bool) for a in args):
        return f"{kind} takes two numbers, LOW and HIGH"
    low, high = args
    if not low < high:
        return f"{kind} needs LOW < HIGH, got {low} and {high}"
    if kind == "loguniform" and low <= 0:
        return f"loguniform needs LOW > 0, got {low}"
    if kind == "randint" and not all(isinstance(a, int) for a in args):
        return "randint takes two integers"
    return None


def parse_domain(key: str, expr: Any) -> Domain:
    """``"loguniform(1e-5, 1e-3)"`` → ``Domain("loguniform", (1e-5, 1e-3))``; ``ConfigError`` naming the key."""
    where = f"space.{key} = {expr!r}"
    if not isinstance(expr, str):
        raise ConfigError(f"{where}: not an expression; {SPACE_HELP}")
    try:
        node = ast.parse(expr.strip(), mode="eval").body
    except SyntaxError:
        raise ConfigError(f"{where}: not a valid expression; {SPACE_HELP}") from None
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)) or node.keywords:
        raise ConfigError(f"{where}: not a call like loguniform(1e-5, 1e-3); {SPACE_HELP}")
    try:
        args = tuple(ast.literal_eval(a) for a in node.args)  # literals only: numbers, strings, lists
    except (ValueError, SyntaxError, TypeError):
        raise ConfigError(f"{where}: arguments must be literal numbers, strings or lists; {SPACE_HELP}") from None
    if problem := _check_domain(node.func.id, args):
        raise ConfigError(f"{where}: {problem}; {SPACE_HELP}")
    return Domain(node.func.id, args)


def parse_space(space: dict[str, Any]) -> dict[str, Domain]:
    if not space:
        raise ConfigError(
            "space is empty: give at least one key to search, e.g. space.optim.lr='loguniform(1e-5, 1e-3)'"
        )
    return {key: parse_domain(key, expr) for key, expr in space.items()}


def to_tune(domain: Domain) -> Any:
    """The Ray Tune sampler of a parsed domain."""
    from ray import tune

    samplers = {
        "uniform": tune.uniform,
        "loguniform": tune.loguniform,
        "randint": tune.randint,
        "choice": lambda values: tune.choice(list(values)),
        "grid": lambda values: tune.grid_search(list(values)),
    }
    return samplers[domain.kind](*domain.args)


# -- one trial's trainer config -------------------------------------------------------------------------------------
def trainer_config(cfg: TuneConfig, values: dict[str, Any], run: dict[str, Any] | None = None) -> Any:
    """The trainer's validated config: ``base`` + ``overrides`` + the sampled ``values`` (+ ``run`` fields)."""
    trainer = TRAINERS[cfg.command]
    cls = getattr(importlib.import_module(trainer.module), trainer.config)
    fixed = cfg.overrides | values | {f"run.{k}": v for k, v in (run or {}).items()}
    overrides = [*trainer.defaults, *(f"{k}={json.dumps(v)}" for k, v in fixed.items())]  # JSON is YAML
    return load_config(cls, cfg.base, overrides)


def check_space(cfg: TuneConfig, space: dict[str, Domain]) -> Any:
    """Validate the base config and every edge value of every key before any trial starts; returns the base."""
    base = trainer_config(cfg, {})
    for key, domain in space.items():
        for value in domain.corners():
            try:
                trainer_config(cfg, {key: value})
            except ConfigError as e:
                raise ConfigError(
                    f"space.{key} = {cfg.space[key]!r}: value {value!r} is refused by the {cfg.command} config:\n{e}"
                ) from None
    if cfg.scheduler == "asha" and not isinstance(getattr(base, "steps", None), int):
        raise ConfigError(f"scheduler asha needs the {cfg.command} config's `steps`; use scheduler=fifo")
    return base


def run_trial(values: dict[str, Any], cfg_json: str, trials_dir: str, cwd: str) -> None:
    """Tune's trainable: train in a thread, report each new ``metrics.jsonl`` row that holds the metric."""
    import torch
    from ray import tune

    os.chdir(cwd)  # the base config's relative paths (model.path, task.path) mean what they meant to the user
    cfg = TuneConfig.model_validate_json(cfg_json)
    torch.set_num_threads(max(1, int(cfg.cpus_per_trial)))
    run_dir = Path(trials_dir) / tune.get_context().get_trial_id()
    train_cfg = trainer_config(cfg, values, {"root": trials_dir, "name": run_dir.name, "progress": False})
    train = importlib.import_module(TRAINERS[cfg.command].module).train
    failure: list[BaseException] = []

    def work() -> None:
        try:
            train(train_cfg)
        except BaseException as e:  # re-raised in the trial so Tune records the error
            failure.append(e)

    thread = threading.Thread(target=work, daemon=True)  # dies with the actor when ASHA stops the trial
    thread.start()
    # The last step's row is reported only once the trainer has returned: ASHA stops a trial that reaches max_t, and a
    # stop then would kill the thread while it writes final/ (seen under load in CI).
    follow_metrics(run_dir, cfg.metric, tune.report, thread.is_alive, hold_from=getattr(train_cfg, "steps", None))
    if failure:
        raise failure[0]


def follow_metrics(
    run_dir: Path,
    metric: str,
    report: Callable[[dict[str, float]], Any],
    running: Callable[[], bool],
    poll_s=0.2,
    hold_from: int | None = None,
) -> int:
    """Call ``report`` with each row of ``run_dir/metrics.jsonl`` that holds ``metric`` (its numbers and ``step``), as
    the rows are written, until ``running()`` is false and the last rows are read; returns how many were reported.
    Rows at step ≥ ``hold_from`` wait until ``running()`` is false."""
    seen = reported = 0
    while True:
        done = not running()  # read once more after the writer has finished
        rows = read_metrics(run_dir)  # a torn last line is skipped now and read complete next time
        for row in rows[seen:]:
            if not done and hold_from is not None and row["step"] >= hold_from:
                break  # the final row: reported after the trainer has written its final model
            if metric in row:
                report(numeric(row) | {"step": row["step"]})
                reported += 1
            seen += 1
        if done:
            return reported
        time.sleep(poll_s)


# -- the search -----------------------------------------------------------------------------------------------------
def tune(cfg: TuneConfig, resume: bool = False) -> dict[str, Any]:
    """Run the search; returns {"best_config", "best_metric", "best_run_dir", "table", "tune_dir", "plots"}."""
    if resume:
        raise ConfigError("tune does not resume a search; start a new one (a trial's run directory resumes alone)")
    space = parse_space(cfg.space)
    base = check_space(cfg, space)
    name = cfg.name or f"tune-{cfg.command}-{time.strftime('%Y%m%d-%H%M%S')}"
    tune_dir = (Path(cfg.root) / name).resolve()
    if (tune_dir / "results.csv").exists():
        raise FileExistsError(f"tune directory {tune_dir} already holds a search; choose a new name")
    (tune_dir / "trials").mkdir(parents=True, exist_ok=True)
    (tune_dir / "config.yaml").write_text(dump_config(cfg))
    grid = search(cfg, space, base, tune_dir)
    rows = result_rows(grid, cfg, tune_dir, getattr(base, "steps", None))
    table = write_table(rows, list(space), cfg, tune_dir)
    if not any(math.isfinite(r["metric"]) for r in rows):
        logged = sorted(
            {k for r in rows for row in read_metrics(r["run_dir"]) for k in numeric(row)} - {"step", "time"}
        )
        raise RuntimeError(
            f"no trial reported metric {cfg.metric!r}; the trials logged: {', '.join(logged) or 'nothing'} "
            f"(errors, if any, in {table})"
        )
    plots = plot_search(rows, list(space), cfg, tune_dir)
    best = rows[0]
    summary = {
        "best_config": best["values"],
        "best_metric": best["metric"],
        "best_run_dir": best["run_dir"],
        "table": table,
        "tune_dir": tune_dir,
        "plots": plots,
    }
    (tune_dir / "best.json").write_text(json.dumps(summary, default=str, indent=1))
    return summary


def search(cfg: TuneConfig, space: dict[str, Domain], base: Any, tune_dir: Path) -> Any:
    """Start (or join) Ray, run the trials, return Tune's ResultGrid."""
    import ray
    from ray import tune as ray_tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

    started = not ray.is_initialized()  # a Ray we start, we stop; one the caller started stays up
    if started:
        ray.init(address=cfg.ray_address, include_dashboard=False, configure_logging=False, log_to_driver=False)
    if cfg.scheduler == "asha":
        scheduler = ASHAScheduler(
            time_attr="step", max_t=base.steps, grace_period=cfg.grace_period, reduction_factor=cfg.reduction_factor
        )
    else:
        scheduler = FIFOScheduler()
    trainable = functools.partial(
        run_trial, cfg_json=cfg.model_dump_json(), trials_dir=str(tune_dir / "trials"), cwd=os.getcwd()
    )
    resources = {"cpu": cfg.cpus_per_trial, "gpu": cfg.gpus_per_trial}
    tuner = ray_tune.Tuner(
        ray_tune.with_resources(trainable, resources),
        param_space={key: to_tune(d) for key, d in space.items()},
        tune_config=ray_tune.TuneConfig(
            metric=cfg.metric,
            mode=cfg.mode,
            num_samples=cfg.trials,
            scheduler=scheduler,
            search_alg=BasicVariantGenerator(random_state=cfg.seed, max_concurrent=cfg.max_concurrent),
            reuse_actors=False,  # a stopped trial's training thread must die with its actor
        ),
        run_config=ray_tune.RunConfig(name="ray", storage_path=str(tune_dir), verbose=0),
    )
    try:
        return tuner.fit()
    finally:
        if started:
            ray.shutdown()


# -- results: table and plots ---------------------------------------------------------------------------------------
def result_rows(grid: Any, cfg: TuneConfig, tune_dir: Path, max_step: int | None) -> list[dict[str, Any]]:
    """One row per trial, best first: its values, the metric at its last report, that step, whether ASHA stopped
    it before the trainer's last step, its error."""
    sign = 1.0 if cfg.mode == "max" else -1.0
    rows = []
    for result in grid:
        m = result.metrics or {}
        metric = m.get(cfg.metric)
        trial_id = m.get("trial_id") or Path(result.path).name
        run_dir = tune_dir / "trials" / trial_id
        step = m.get("step")
        stopped = not result.error and max_step is not None and isinstance(step, int) and step < max_step
        rows.append(
            {
                "trial": trial_id,
                "values": {k: v for k, v in result.config.items()},
                "metric": float(metric) if isinstance(metric, int | float) else math.nan,
                "step": step,
                "reports": m.get("training_iteration", 0),
                "status": "error" if result.error else "stopped early" if stopped else "done",
                "error": str(result.error).splitlines()[0][:200] if result.error else "",
                "run_dir": run_dir,
            }
        )
    rows.sort(key=lambda r: -sign * r["metric"] if math.isfinite(r["metric"]) else math.inf)
    return rows


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def write_table(rows: list[dict[str, Any]], keys: list[str], cfg: TuneConfig, tune_dir: Path) -> Path:
    """results.csv and results.md in ``tune_dir``, best trial first; returns the Markdown path."""
    header = ["rank", "trial", *keys, cfg.metric, "step", "status", "run_dir"]
    lines = [[i + 1, r["trial"], *(r["values"].get(k) for k in keys), r["metric"], r["step"], r["status"],
              os.path.relpath(r["run_dir"], tune_dir)] for i, r in enumerate(rows)]  # fmt: skip
    with open(tune_dir / "results.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, *lines])
    md = [
        f"{cfg.command}: {len(rows)} trials, {cfg.metric} ({cfg.mode}), scheduler {cfg.scheduler}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(_fmt(v) for v in line) + " |" for line in lines),
    ]
    md += [f"\n{r['trial']}: {r['error']}" for r in rows if r["error"]]
    path = tune_dir / "results.md"
    path.write_text("\n".join(md) + "\n")
    return path


def plot_search(rows: list[dict[str, Any]], keys: list[str], cfg: TuneConfig, tune_dir: Path) -> list[Path]:
    """``metric_vs_step.png`` (every trial's curve from its run directory) and ``metric_vs_<key>.png`` per key."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    out_dir = tune_dir / "plots"
    out_dir.mkdir(exist_ok=True)
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for r in rows:
        pts = [(x["step"], x[cfg.metric]) for x in read_metrics(r["run_dir"]) if cfg.metric in x]
        if pts:
            label = ", ".join(f"{k}={_fmt(r['values'].get(k))}" for k in keys)
            ax.plot(*zip(*pts, strict=True), marker=".", label=f"{r['trial']}: {label}")
    ax.set_xlabel("step")
    ax.set_ylabel(cfg.metric)
    ax.set_title(f"tune {cfg.command}: {cfg.metric} per trial")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    written = [out_dir / "metric_vs_step.png"]
    fig.savefig(written[0], dpi=100)
    space = parse_space(cfg.space)
    for key in keys:
        fig = Figure(figsize=(5, 3.5))
        ax = fig.subplots()
        pts = [(r["values"].get(key), r["metric"]) for r in rows if math.isfinite(r["metric"])]
        ax.scatter([str(x) if space[key].kind in ("choice", "grid") else x for x, _ in pts], [y for _, y in pts])
        if space[key].kind == "loguniform":
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel(f"{cfg.metric} (last report)")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out_dir / f"metric_vs_{key.replace('/', '_')}.png"
        fig.savefig(path, dpi=100)
        written.append(path)
    return written
