"""Ray scale-out on this machine: collect throughput with the local backend against 1 and 2 Ray rollout workers, and
the cost of broadcasting weights to the workers against model size (issue 13 item 6).

    python -m benchmarks.ray_throughput [--preset llama-4m] [--prompts 16] [--group 4] [--new-tokens 16]
        [--repeats 3] [--broadcast-presets llama-1m,llama-4m,llama-10m,llama-30m]
        [--sections collect,broadcast,off_policy] [--off-policy-steps 12] [--off-policy-repeats 2]

Collect: one GRPO-shaped step (``--prompts`` × ``--group`` samples, per-row seeded sampling, temperature 1, a
length reward) through ``rollout.collect_step`` in this process (torch threads 1 and 2), and through ``RayCollector``
with 1 and 2 workers of 1 CPU each (weights broadcast included, as in training). Sides interleaved, wall-clock
median of ``--repeats`` rounds after a warm-up round; every side samples the same tokens (asserted). Broadcast:
``ray.put`` of the trainable weights plus every worker loading them (``RolloutWorker.load``), median of 5 after a
warm-up. Off-policy: GRPO runs on 1 Ray rollout worker (1 CPU) with ``run.off_policy_steps`` 0 and 1, alternated
``--off-policy-repeats`` times; steps/s over steps 2 .. n−1 from the run's own metrics clock (worker start-up, the
first step and the final evaluation left out). Prints one JSON document and markdown tables; ``uptime`` load is
recorded beside them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import ray
import torch
from transformers import AutoModelForCausalLM

import rewardloop.algorithms.grpo as grpo
from benchmarks.common import machine_info
from rewardloop.config import GenerationConfig, ModelConfig, RunConfig, load_config
from rewardloop.distributed.collector import RayCollector, trainable_weights
from rewardloop.models import build_tokenizer, count_parameters, preset_config
from rewardloop.rewards.composite import RewardSet
from rewardloop.rollout.collect import collect_step
from rewardloop.runs import read_metrics


def length_reward(prompts, completions, **_):
    return [float(len(c)) for c in completions]


def build(preset: str, tokenizer):
    cfg = preset_config(preset, vocab_size=len(tokenizer), max_length=256, pad_token_id=tokenizer.pad_token_id,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg).eval()


def loadavg() -> str:
    path = Path("/proc/loadavg")
    return " ".join(path.read_text().split()[:3]) if path.exists() else "?"


def load_avg() -> str:
    """The 1-minute load average now (beside each measured row)."""
    return loadavg().split(" ")[0]


def median_time(fn, repeats: int) -> tuple[float, object]:
    fn()  # warm-up
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def collect_sides(args, tokenizer) -> list[dict]:
    model = build(args.preset, tokenizer)
    gen = GenerationConfig(max_new_tokens=args.new_tokens, temperature=1.0)
    rewards = RewardSet({"len": length_reward}, {"len": 1.0})
    rows = [{"prompt": f"{i}+{2 * i}="} for i in range(args.prompts)]
    kw = dict(rows=rows, samples_per_prompt=args.group, seed=0, row_seeded=True, n_groups=args.prompts)

    def local(threads: int):
        def run():
            torch.set_num_threads(threads)
            return collect_step(model, tokenizer, gen, rewards, **kw)

        return run

    collectors = {
        n: RayCollector(RunConfig(backend="ray", rollout_workers=n), ModelConfig(), model, tokenizer, rewards, None)
        for n in (1, 2)
    }
    sides = {"local, 1 thread": local(1), "local, 2 threads": local(2)}
    sides |= {
        f"ray, {n} worker{'s' * (n > 1)}": (lambda c=c: c(model, tokenizer, gen, rewards, **kw))
        for n, c in collectors.items()
    }
    for fn in sides.values():
        fn()  # warm-up round (workers start, caches fill)
    times: dict[str, list[float]] = {name: [] for name in sides}
    outs = {}
    for _ in range(args.repeats):  # interleaved rounds
        for name, fn in sides.items():
            t0 = time.perf_counter()
            outs[name] = fn()
            times[name].append(time.perf_counter() - t0)
    ref = outs["local, 1 thread"]
    base = statistics.median(times["local, 1 thread"])
    table = []
    for name, ts in times.items():
        assert outs[name].responses == ref.responses, f"{name} sampled other tokens than the local run"
        t = statistics.median(ts)
        tokens = int(outs[name].response_mask.sum())
        table.append({"side": name, "seconds": t, "tokens_per_s": tokens / t, "samples_per_s": len(ref) / t,
                      "speedup_vs_local_1_thread": base / t, "load": load_avg()})  # fmt: skip
    for c in collectors.values():
        c.close()
    torch.set_num_threads(1)
    return table


def time_broadcast(model, collector: RayCollector, repeats: int = 5) -> tuple[float, float]:
    """(median s of ray.put alone, median s of ray.put + every worker loading the weights)."""
    version = [0]

    def broadcast():
        version[0] += 1
        ref = ray.put(trainable_weights(model))
        ray.get([w.load.remote(ref, version[0]) for w in collector.workers])

    t_put, _ = median_time(lambda: ray.put(trainable_weights(model)), repeats)
    t_all, _ = median_time(broadcast, repeats)
    return t_put, t_all


def broadcast_sides(args, tokenizer) -> list[dict]:
    table = []
    for preset in args.broadcast_presets.split(","):
        model = build(preset, tokenizer)
        collector = RayCollector(
            RunConfig(backend="ray", rollout_workers=2), ModelConfig(), model, tokenizer, RewardSet({}, {}), None
        )
        t_put, t_all = time_broadcast(model, collector)
        mb = sum(t.numel() * t.element_size() for t in trainable_weights(model).values()) / 2**20
        table.append({"preset": preset, "params": count_parameters(model), "MiB": mb, "put_s": t_put,
                      "put_and_2_workers_load_s": t_all, "MiB_per_s": mb / t_all, "load": load_avg()})  # fmt: skip
        collector.close()
    return table


def grpo_steps_per_s(args, off_policy_steps: int, root: str, name: str) -> dict:
    """One GRPO run on 1 Ray rollout worker; steps/s over steps 2 .. n-1 (the run's metrics clock)."""
    over = [
        f"model.preset={args.preset}", "model.device=cpu", "model.max_length=64", "task.n_train=256", "task.n_test=8",
        f"gen.max_new_tokens={args.new_tokens}", "eval_gen.max_new_tokens=4", f"prompts_per_step={args.prompts}",
        f"group_size={args.group}", f"steps={args.off_policy_steps}", "eval_every=100000", "eval_size=8",
        "micro_batch_size=null", "n_samples=0", "run.backend=ray", "run.rollout_workers=1", f"run.root={root}",
        f"run.name={name}", "run.progress=false", f"run.off_policy_steps={off_policy_steps}",
    ]  # fmt: skip
    out = grpo.train(load_config(grpo.GRPOConfig, None, over))
    t = {r["step"]: r["time"] for r in read_metrics(out["run_dir"]) if "reward/mean" in r}
    n = args.off_policy_steps
    return {"steps_per_s": (n - 2) / (t[n - 1] - t[1]), "load": load_avg()}


def off_policy_sides(args) -> list[dict]:
    """steps/s with and without the one-step overlap, alternated runs; the ratio is per pair of runs."""
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for i in range(args.off_policy_repeats):
            on = grpo_steps_per_s(args, 0, root, f"on-{i}")
            off = grpo_steps_per_s(args, 1, root, f"off-{i}")
            rows.append({"round": i, "on_policy_steps_per_s": on["steps_per_s"],
                         "off_policy_steps_per_s": off["steps_per_s"],
                         "ratio": off["steps_per_s"] / on["steps_per_s"], "load": off["load"]})  # fmt: skip
    return rows


def markdown(result: dict) -> str:
    lines = []
    if "collect" in result:
        lines += ["| side | s / step | tokens/s | samples/s | × local 1 thread | load |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['side']} | {r['seconds']:.3f} | {r['tokens_per_s']:.0f} | {r['samples_per_s']:.1f} | "
                  f"{r['speedup_vs_local_1_thread']:.2f} | {r['load']} |" for r in result["collect"]]  # fmt: skip
    if "broadcast" in result:
        lines += [
            "",
            "| preset | params | MiB | ray.put s | put + 2 workers load s | MiB/s | load |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [f"| {r['preset']} | {r['params'] / 1e6:.1f}M | {r['MiB']:.1f} | {r['put_s']:.4f} | "
                  f"{r['put_and_2_workers_load_s']:.4f} | {r['MiB_per_s']:.0f} | {r['load']} |" for r in result["broadcast"]]  # fmt: skip
    if "off_policy" in result:
        lines += ["", "| round | steps/s on-policy | steps/s one-step off-policy | × | load |", "|---|---|---|---|---|"]
        lines += [f"| {r['round']} | {r['on_policy_steps_per_s']:.3f} | {r['off_policy_steps_per_s']:.3f} | "
                  f"{r['ratio']:.2f} | {r['load']} |" for r in result["off_policy"]]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="llama-4m")
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--group", type=int, default=4)
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--broadcast-presets", default="llama-1m,llama-4m,llama-10m,llama-30m")
    p.add_argument("--sections", default="collect,broadcast,off_policy")
    p.add_argument("--off-policy-steps", type=int, default=12, help="GRPO steps per run (≥ 4)")
    p.add_argument("--off-policy-repeats", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(1)
    # 3 logical CPUs so that the 1- and the 2-worker collectors (1 CPU each) live side by side for interleaved rounds;
    # the sides run one after another, so at most 2 workers compute at any time, on this machine's 2 cores.
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    tokenizer = build_tokenizer()
    uptime_before = loadavg()
    sections = args.sections.split(",")
    result = {"args": vars(args), "machine": machine_info(), "loadavg_before": uptime_before}
    if "collect" in sections:
        result["collect"] = collect_sides(args, tokenizer)
    if "broadcast" in sections:
        result["broadcast"] = broadcast_sides(args, tokenizer)
    if "off_policy" in sections:
        result["off_policy"] = off_policy_sides(args)
    result["loadavg_after"] = loadavg()
    ray.shutdown()
    print(json.dumps(result, indent=2))
    print(markdown(result))


if __name__ == "__main__":
    main()
