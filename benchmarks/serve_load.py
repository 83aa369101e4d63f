"""Serving load: completion tokens/s and p50 / p99 request latency with 1, 8 and 32 concurrent clients, for
rewardloop's server and vLLM's OpenAI-compatible server measured in the same run, on the same tiny model.

    python -m benchmarks.serve_load [--clients 1,8,32] [--requests 8] [--max-tokens 48] [--preset llama-1m]
                                    [--servers ours,vllm] [--threads 1]

The preset is saved once (random init, seed 0; ``save_model``: safetensors weights, config and the project's
tokenizer files) and both servers load that directory. Each server runs in its own process on loopback (ours:
``--serve-ours``, uvicorn with the engine and a SQLite store that logs every request, as in production; vLLM:
``vllm.entrypoints.openai.api_server`` from ``benchmarks/.venv-vllm``, built by ``benchmarks/setup_vllm_env.sh``,
fp32, ``VLLM_ENABLE_V1_MULTIPROCESSING=0``). Requests are greedy and always decode exactly ``--max-tokens`` tokens
(ours with EOS switched off, vLLM with ``ignore_eos``); the token counts are checked equal. For each client count the
servers are driven one after the other by the same ``openai`` clients from this process: each client sends
``--requests`` requests one after another. Prints one JSON document and a markdown table. A server that cannot start
is reported with its command and the tail of its log instead of numbers. ``--servers ours-nolog`` adds our server with
the per-request interaction logging switched off (an experiment, not a configuration: it bounds what logging costs).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from benchmarks.common import machine_info
from benchmarks.models import build_model_dir

VLLM_PYTHON = Path(__file__).parent / ".venv-vllm" / "bin" / "python"
MODEL_NAME = "bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_clients(base_url: str, clients: int, requests: int, max_tokens: int, extra_body: dict) -> dict:
    """``clients`` threads, each sending ``requests`` completions one after another; tokens/s and latencies."""
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=600)
    latencies, tokens, lock = [], [0], threading.Lock()

    def worker(c: int) -> None:
        for r in range(requests):
            start = time.perf_counter()
            out = client.completions.create(
                model=MODEL_NAME,
                prompt=f"{c}+{r}= and then",
                temperature=0,
                max_tokens=max_tokens,
                extra_body=extra_body,
            )
            with lock:
                latencies.append(time.perf_counter() - start)
                tokens[0] += out.usage.completion_tokens

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [latencies[0]] * 99
    return {
        "clients": clients,
        "requests": len(latencies),
        "completion_tokens": tokens[0],
        "seconds": round(wall, 3),
        "tokens_per_s": round(tokens[0] / wall, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": round(q[98] * 1000, 1),
    }


def serve_ours(model_dir: str, port: int, threads: int, log: bool = True) -> None:
    """The ``--serve-ours`` process: rewardloop's app on ``port`` with EOS switched off, logging to SQLite (or, with
    ``log=False``, writing nothing: an experiment that bounds what the per-request logging costs)."""
    import torch
    import uvicorn

    from rewardloop.config import ModelConfig
    from rewardloop.models.loading import load_pretrained
    from rewardloop.serve import ServeConfig, create_app
    from rewardloop.store import Store

    torch.set_num_threads(threads)
    model, tokenizer = load_pretrained(ModelConfig(path=model_dir, device="cpu"))
    model.generation_config.eos_token_id = None  # random weights: every request runs max_tokens
    tokenizer.eos_token_id = None
    with tempfile.TemporaryDirectory() as tmp, Store.open(f"sqlite:///{tmp}/bench.db") as store:
        cfg = ServeConfig.model_validate({"serve": {"model_name": MODEL_NAME, "max_batch": 64, "port": port}})
        app = create_app(cfg, model=model, tokenizer=tokenizer, store=store)
        if not log:
            app.state.server.log = lambda *args, **kwargs: None

        @app.get("/bench/stats")
        def stats() -> dict:  # the engine's step counters, read between client rounds
            return dict(app.state.server.engine.stats)

        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


class Server:
    """A server process (own session, so the whole group is stopped) and its log file."""

    def __init__(self, name: str, cmd: list[str], env: dict, log: Path, port: int):
        self.name, self.cmd, self.log, self.port = name, cmd, log, port
        self.base = f"http://127.0.0.1:{port}"
        with open(log, "w") as f:
            self.proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base}/v1/models", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(1)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def stats(self) -> dict | None:
        try:
            with urllib.request.urlopen(f"{self.base}/bench/stats", timeout=5) as r:
                return json.load(r)
        except OSError:
            return None

    def log_tail(self, lines: int = 25) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start_servers(names: list[str], model_dir: Path, tmp: Path, threads: int) -> tuple[dict, dict]:
    """Start each named server; returns (name → Server ready to serve, name → why it could not start)."""
    servers, failed = {}, {}
    for name in names:
        port = free_port()
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        if name in ("ours", "ours-nolog"):
            cmd = [sys.executable, "-m", "benchmarks.serve_load", "--serve-ours", str(model_dir), "--port", str(port)]
            cmd += ["--threads", str(threads)] + (["--no-log"] if name == "ours-nolog" else [])
        elif name == "vllm":
            if not VLLM_PYTHON.exists():
                failed[name] = f"{VLLM_PYTHON} missing: run bash benchmarks/setup_vllm_env.sh"
                continue
            cmd = [str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir)]
            cmd += ["--port", str(port), "--served-model-name", MODEL_NAME, "--dtype", "float32"]
            cmd += ["--max-model-len", "512", "--seed", "0"]
            env |= {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}
        else:
            raise SystemExit(f"--servers: unknown server {name!r} (allowed: ours, ours-nolog, vllm)")
        server = Server(name, cmd, env, tmp / f"{name}.log", port)
        try:
            server.wait_ready(timeout=900)
            servers[name] = server
        except RuntimeError as e:
            server.stop()
            failed[name] = f"command: {' '.join(cmd)}\n{e}"
    return servers, failed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", default="1,8,32")
    ap.add_argument("--requests", type=int, default=8, help="requests per client")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--preset", default="llama-1m")
    ap.add_argument("--servers", default="ours,vllm")
    ap.add_argument("--threads", type=int, default=1, help="torch / OpenMP threads of each server")
    ap.add_argument("--serve-ours", metavar="MODEL_DIR", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--no-log", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_ours:
        serve_ours(args.serve_ours, args.port, args.threads, log=not args.no_log)
        return
    names = args.servers.split(",")
    extra = {"ours": {}, "ours-nolog": {}, "vllm": {"ignore_eos": True}}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model_dir(args.preset, Path(tmp) / "models")
        servers, failed = start_servers(names, model_dir, Path(tmp), args.threads)
        try:
            for server in servers.values():  # warm-up
                run_clients(f"{server.base}/v1", 2, 2, 8, extra[server.name])
            for clients in (int(c) for c in args.clients.split(",")):
                for name, server in servers.items():
                    before = server.stats()
                    row = {
                        "server": name,
                        **run_clients(f"{server.base}/v1", clients, args.requests, args.max_tokens, extra[name]),
                    }
                    after = server.stats()
                    if before and after and after["steps"] > before["steps"]:
                        steps = after["steps"] - before["steps"]
                        row["mean_rows_per_step"] = round((after["tokens"] - before["tokens"]) / steps, 2)
                    expected = clients * args.requests * args.max_tokens
                    assert row["completion_tokens"] == expected, f"{name}: {row['completion_tokens']} != {expected}"
                    rows.append(row)
        finally:
            for server in servers.values():
                server.stop()
    info = {"benchmark": "serve_load", "preset": args.preset, "max_tokens": args.max_tokens, "threads": args.threads}
    print(json.dumps({**info, "machine": machine_info(), "rows": rows, "failed": failed}, indent=2))
    print("\n| clients | server | requests | tokens/s | p50 ms | p99 ms | rows/step |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['clients']} | {r['server']} | {r['requests']} | {r['tokens_per_s']} | {r['p50_ms']} | "
            f"{r['p99_ms']} | {r.get('mean_rows_per_step', '')} |"
        )
    for name, why in failed.items():
        print(f"\n{name} did not run:\n{why}")


if __name__ == "__main__":
    main()
