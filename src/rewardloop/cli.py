"""The command line: one table of commands → (module, config class, function).

    rewardloop <command> [--config FILE.yaml] [--resume] [key.sub=value ...]
    rewardloop quickstart | report RUN_DIR | value MODEL_DIR [PROMPT...] [--file F] | config <command>

Training commands load their pydantic config (YAML + dotted overrides; errors name the key and value), call
``train(cfg, resume=...)`` and print the returned summary.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any, NamedTuple

from rewardloop.config import ConfigError, dump_config, load_config


class Command(NamedTuple):
    module: str
    config: str
    fn: str
    defaults: tuple[str, ...] = ()  # overrides applied before the user's (e.g. rloo = grpo with estimator=rloo)
    help: str = ""
    actions: tuple[str, ...] = ()  # leading words meaning `action=WORD` (`feedback export ...`)
    flags: tuple[tuple[str, str], ...] = ()  # ("--store", "store.url"): `--store X` means `store.url=X`


COMMANDS: dict[str, Command] = {
    "sft": Command("rewardloop.algorithms.sft", "SFTConfig", "train", help="supervised fine-tuning (the baseline)"),
    "reward": Command(
        "rewardloop.algorithms.reward_model", "RewardModelConfig", "train", help="train a reward model on preferences"
    ),
    "ppo": Command("rewardloop.algorithms.ppo", "PPOConfig", "train", help="PPO actor-critic"),
    "rlhf": Command("rewardloop.algorithms.rlhf", "RLHFConfig", "train", help="SFT → preferences → RM → PPO → eval"),
    "grpo": Command("rewardloop.algorithms.grpo", "GRPOConfig", "train", help="GRPO / Dr.GRPO / REINFORCE++"),
    "rloo": Command(
        "rewardloop.algorithms.grpo", "GRPOConfig", "train", ("estimator=rloo",), "RLOO (leave-one-out baseline)"
    ),
    "dpo": Command("rewardloop.algorithms.dpo", "DPOConfig", "train", help="direct preference optimisation"),
    "kto": Command("rewardloop.algorithms.kto", "KTOConfig", "train", help="KTO: learn from thumbs up / down"),
    "serve": Command("rewardloop.serve", "ServeConfig", "serve", help="OpenAI-compatible server, logs to the store"),
    "loop": Command(
        "rewardloop.loop.rounds",
        "LoopConfig",
        "run",
        help="learn from collected feedback in rounds, promote only what is better: loop --store URL model.path=DIR "
        "| loop round | loop rollback | loop status",
        actions=("run", "round", "rollback", "status"),
        flags=(("--store", "store.url"),),
    ),
    "tune": Command(
        "rewardloop.distributed.tune",
        "TuneConfig",
        "tune",
        help="hyper-parameter search with Ray Tune (ASHA): tune --config search.yaml | tune command=grpo "
        "'space.optim.lr=loguniform(1e-5, 1e-3)' metric=eval/accuracy",
    ),
    "personalize": Command(
        "rewardloop.personalize",
        "PersonalizeConfig",
        "run",
        help="compare slate policies (bandit baselines, oracle) on feed / playlist / search: regret table and plot",
    ),
    "keys": Command(
        "rewardloop.store.keys",
        "KeysConfig",
        "run",
        help="API keys for `serve.auth`: keys create --name alice --role annotator --store URL | keys list | revoke",
        actions=("create", "list", "revoke"),
        flags=(("--store", "store.url"), ("--name", "name"), ("--role", "role")),
    ),
    "feedback": Command(
        "rewardloop.store.export",
        "FeedbackConfig",
        "run",
        help="export feedback as a TRL dataset or Label Studio / Argilla tasks, or import annotations: feedback export "
        "--store URL --format pairs --out F.jsonl | feedback import --format labelstudio --in F.json",
        actions=("export", "import"),
        flags=(("--store", "store.url"), ("--format", "format"), ("--out", "out"), ("--in", "input")),
    ),
}


def config_class(name: str):
    cmd = COMMANDS[name]
    return getattr(importlib.import_module(cmd.module), cmd.config)


def _print_result(result: Any) -> None:
    if isinstance(result, dict):
        for k, v in result.items():
            if isinstance(v, dict):
                v = {kk: vv for kk, vv in v.items() if not isinstance(vv, list)}
                v = json.dumps(v, default=str)
            print(f"{k}: {v}")
    elif result is not None:
        print(result)


def command_overrides(cmd: Command, args: argparse.Namespace) -> list[str]:
    """The user's overrides with a leading action word and the command's flags written as ``key=value``."""
    overrides = list(args.overrides)
    if overrides and overrides[0] in cmd.actions:
        overrides[0] = f"action={overrides[0]}"
    flags = [f"{key}={v}" for flag, key in cmd.flags if (v := getattr(args, flag.lstrip("-"))) is not None]
    return flags + overrides


def run_command(name: str, config: str | None, overrides: list[str], resume: bool) -> Any:
    cmd = COMMANDS[name]
    cls = config_class(name)
    cfg = load_config(cls, config, list(cmd.defaults) + overrides)
    fn = getattr(importlib.import_module(cmd.module), cmd.fn)
    return fn(cfg, resume=resume)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rewardloop", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help)
        p.add_argument("--config", "-c", help="YAML config (see configs/)")
        p.add_argument(
            "--resume", action="store_true", help="continue the run in run.root/run.name from its checkpoint"
        )
        for flag, key in cmd.flags:
            p.add_argument(flag, help=f"same as {key}=VALUE")
        p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=3e-4 model.path=/some/dir")
    q = sub.add_parser("quickstart", help="tokenizer + tiny model → SFT → PPO on arithmetic, in minutes on a CPU")
    q.add_argument("overrides", nargs="*", help="dotted overrides of the quickstart config, e.g. sft.steps=200")
    r = sub.add_parser("report", help="plots + summary table of a run directory")
    r.add_argument("run_dir")
    v = sub.add_parser("value", help="score prompts with a trained critic: how well the policy is expected to do")
    v.add_argument("model_dir", help="a critic saved by ppo (RUN/final/value)")
    v.add_argument("prompts", nargs="*", help="prompt texts")
    v.add_argument("--file", help="a prompt dataset (JSONL/JSON/Parquet/CSV with a 'prompt' column)")
    c = sub.add_parser("config", help="print a command's default config as YAML")
    c.add_argument("name", choices=sorted(COMMANDS))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command in COMMANDS:
            overrides = command_overrides(COMMANDS[args.command], args)
            _print_result(run_command(args.command, args.config, overrides, args.resume))
        elif args.command == "quickstart":
            from rewardloop.quickstart import quickstart

            quickstart(args.overrides)
        elif args.command == "report":
            from rewardloop.report import report

            print(report(args.run_dir))
        elif args.command == "value":
            from rewardloop.algorithms.ppo import value_command

            for row in value_command(args.model_dir, args.prompts, args.file):
                print(f"{row['value']:+.4f}\t{row['prompt']}")
        elif args.command == "config":
            print(dump_config(config_class(args.name)()), end="")
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"rewardloop {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
