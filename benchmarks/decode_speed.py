"""Decode speed: the serving engine (``ContinuousBatcher``) and ``rollout.generate`` against ``model.generate`` on the
same prompts, greedy, batch 1 and 16, measured in one process.

    python -m benchmarks.decode_speed [--presets llama-1m,qwen2-4m] [--batches 1,16] [--new-tokens 64] [--repeats 5]

Each model is a preset saved by ``benchmarks.models.build_model_dir`` (random init, seed 0) with EOS switched off, so
every row decodes ``--new-tokens`` tokens. Before any timing, the tokens of all three sides are asserted identical
(the engine and rollout take the lean decode path for these models). Timing: process CPU seconds (robust to other
jobs on a shared machine) of one full call — prefill plus decode — per side, sides interleaved, ``--repeats`` rounds
after a warm-up round; the median is reported and the ratio is median(model.generate) / median(side). The
"matmul floor" row times only the decode steps' matrix products at their shapes (random inputs, no tokens): its
ratio is the most any decode path without faster matmuls could reach. Prints one JSON document and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from benchmarks.common import machine_info
from benchmarks.models import build_model_dir
from rewardloop.config import GenerationConfig
from rewardloop.rollout import generate
from rewardloop.rollout.engine import LeanDecoder
from rewardloop.serve.engine import ContinuousBatcher, SamplingParams


def prompts_of(tokenizer, batch: int, length: int, seed: int = 0) -> list[list[int]]:
    """``batch`` random prompts of ``length - 5 * (row % 3 == 1)`` tokens (some rows shorter: left padding)."""
    gen = torch.Generator().manual_seed(seed)
    low = max(tokenizer.all_special_ids) + 1
    rows = torch.randint(low, len(tokenizer), (batch, length), generator=gen).tolist()
    return [row[5:] if i % 3 == 1 else row for i, row in enumerate(rows)]


def sides(model, tokenizer, prompts: list[list[int]], new_tokens: int) -> dict:
    """name → a call returning the generated token ids [B, new_tokens] for ``prompts``."""
    pad = tokenizer.pad_token_id
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = (torch.arange(width)[None] >= torch.tensor([width - len(p) for p in prompts])[:, None]).long()

    @torch.inference_mode()
    def hf():
        out = model.generate(
            input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=new_tokens, pad_token_id=pad
        )
        return out[:, width:].tolist()

    def engine():
        batcher = ContinuousBatcher(model, tokenizer, max_batch=len(prompts))
        outs = [[] for _ in prompts]
        for prompt, out in zip(prompts, outs, strict=True):
            batcher.submit(prompt, SamplingParams(max_tokens=new_tokens, temperature=0.0), lambda d, o=out: o.append(d))
        batcher.run_until_idle()
        return [[d.token_id for d in out] for out in outs]

    def rollout():
        greedy = GenerationConfig(max_new_tokens=new_tokens, temperature=0.0)
        ro = generate(model, tokenizer, [""] * len(prompts), greedy, prompt_token_ids=prompts)
        return ro.response_ids.tolist()

    return {"model.generate": hf, "engine": engine, "rollout.generate": rollout}


def matmul_floor(model, batch: int, prompt_tokens: int, new_tokens: int):
    """A call doing only the decode steps' matrix products (the lean step's 4 GEMMs per layer + the LM head, and the
    two attention products over the growing cache) at their shapes, on random inputs, prefill left out: no decode path can be faster."""
    dec = LeanDecoder(model, rows=batch, columns=prompt_tokens + new_tokens + 1)
    hidden = dec.embed.shape[1]
    g, D = dec.heads // dec.kv_heads, dec.head_dim
    x, q = torch.randn(batch, hidden), torch.randn(batch, dec.kv_heads, g, D)
    att, act = (torch.randn(batch, dec.layers[0][i].in_features) for i in (3, 7))  # o_proj's and down's inputs

    @torch.inference_mode()
    def run():
        for t in range(new_tokens - 1):
            width = prompt_tokens + t + 1
            for (_, qkv_w, qkv_b, o_proj, _, gu_w, gu_b, down), kb, vb in zip(dec.layers, dec.k, dec.v, strict=True):
                torch.nn.functional.linear(x, qkv_w, qkv_b)
                (q @ kb[:, :, :width].transpose(-1, -2)) @ vb[:, :, :width]
                o_proj(att)
                torch.nn.functional.linear(x, gu_w, gu_b)
                down(act)
            dec.head(x)

    return run


def measure(fns: dict, repeats: int) -> dict[str, float]:
    """Median process CPU seconds per call of each side, sides interleaved, after one warm-up round."""
    seconds = {name: [] for name in fns}
    for r in range(repeats + 1):
        for name, fn in fns.items():
            start = time.process_time()
            fn()
            if r:
                seconds[name].append(time.process_time() - start)
    return {name: statistics.median(s) for name, s in seconds.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", default="llama-1m,qwen2-4m")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--models-dir", default=None, help="where the preset models are saved (default: a temp dir)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.models_dir or tmp)
        for preset in args.presets.split(","):
            path = build_model_dir(preset, root)
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path).eval()
            model.generation_config.eos_token_id = None  # random weights: no early stop, every row decodes N tokens
            tokenizer.eos_token_id = None
            assert LeanDecoder.supports(model), f"{preset}: the lean decode path does not apply"
            for batch in (int(b) for b in args.batches.split(",")):
                prompts = prompts_of(tokenizer, batch, args.prompt_tokens)
                fns = sides(model, tokenizer, prompts, args.new_tokens)
                tokens = {name: fn() for name, fn in fns.items()}
                ref = tokens["model.generate"]
                for name, got in tokens.items():
                    assert got == ref, f"{preset} batch {batch}: {name} decoded other tokens than model.generate"
                fns["matmul floor"] = matmul_floor(model, batch, args.prompt_tokens, args.new_tokens)
                seconds = measure(fns, args.repeats)
                n = batch * args.new_tokens
                for name, s in seconds.items():
                    rows.append(
                        {
                            "preset": preset,
                            "batch": batch,
                            "side": name,
                            "cpu_s": round(s, 4),
                            "tokens_per_s": round(n / s, 1),
                            "vs_generate": round(seconds["model.generate"] / s, 2),
                            "tokens_identical": name != "matmul floor",
                        }
                    )
    info = {"benchmark": "decode_speed", "new_tokens": args.new_tokens, "prompt_tokens": args.prompt_tokens}
    print(json.dumps({**info, "machine": machine_info(), "rows": rows}, indent=2))
    print("\n| preset | batch | side | CPU s | tokens/s | × model.generate |\n|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['preset']} | {r['batch']} | {r['side']} | {r['cpu_s']} | {r['tokens_per_s']} | {r['vs_generate']} |"
        )


if __name__ == "__main__":
    main()
