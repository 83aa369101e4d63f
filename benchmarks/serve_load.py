"""Serving load: completion tokens/s and p50 / p99 request latency with 1, 8, ... concurrent clients, through a real
uvicorn server on loopback and the ``openai`` client, on a tiny preset model (greedy, fixed max_tokens).

    python -m benchmarks.serve_load [--clients 1,8] [--requests 16] [--max-tokens 48] [--preset llama-1m]

Prints one JSON document and a markdown table. Each client sends ``--requests`` requests one after another; the
server logs every one to a SQLite store in a temporary directory (as in production). Compare rows as ratios of the
same run: the 1-client row is the one-request-at-a-time baseline that continuous batching should beat.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import tempfile
import threading
import time

import torch
import uvicorn
from openai import OpenAI

from rewardloop.config import ModelConfig
from rewardloop.models.loading import load_pretrained
from rewardloop.serve import ServeConfig, create_app
from rewardloop.store import Store


def run_clients(base_url: str, clients: int, requests: int, max_tokens: int) -> dict:
    client = OpenAI(base_url=base_url, api_key="x", max_retries=0, timeout=600)
    latencies, tokens, lock = [], [0], threading.Lock()

    def worker(c: int) -> None:
        for r in range(requests):
            start = time.perf_counter()
            out = client.completions.create(
                model="bench", prompt=f"{c}+{r}= and then", temperature=0, max_tokens=max_tokens
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
    q = statistics.quantiles(latencies, n=100)
    return {
        "clients": clients,
        "requests": len(latencies),
        "completion_tokens": tokens[0],
        "seconds": round(wall, 3),
        "tokens_per_s": round(tokens[0] / wall, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": round(q[98] * 1000, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", default="1,8")
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--preset", default="llama-1m")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_pretrained(ModelConfig(preset=args.preset, device="cpu"))
    model.generation_config.eos_token_id = None  # random weights: no early EOS, every request runs max_tokens
    tokenizer_eos, tokenizer.eos_token_id = tokenizer.eos_token_id, None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rows = []
    with tempfile.TemporaryDirectory() as tmp, Store.open(f"sqlite:///{tmp}/bench.db") as store:
        cfg = ServeConfig.model_validate({"serve": {"model_name": "bench", "max_batch": 64, "port": port}})
        app = create_app(cfg, model=model, tokenizer=tokenizer, store=store)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}/v1"
        run_clients(base, 1, 2, 8)  # warm-up
        for clients in (int(c) for c in args.clients.split(",")):
            before = dict(app.state.server.engine.stats)
            row = run_clients(base, clients, args.requests, args.max_tokens)
            after = app.state.server.engine.stats
            row["mean_rows_per_step"] = round(
                (after["tokens"] - before["tokens"]) / (after["steps"] - before["steps"]), 2
            )
            rows.append(row)
        server.should_exit = True
        thread.join(30)
    tokenizer.eos_token_id = tokenizer_eos
    print(json.dumps({"benchmark": "serve_load", "preset": args.preset, "rows": rows}, indent=2))
    print("\n| clients | requests | tokens/s | p50 ms | p99 ms | rows/step |\n|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['clients']} | {r['requests']} | {r['tokens_per_s']} | {r['p50_ms']} | {r['p99_ms']} | "
            f"{r['mean_rows_per_step']} |"
        )


if __name__ == "__main__":
    main()
