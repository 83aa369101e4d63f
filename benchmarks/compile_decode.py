"""Experiment: does ``torch.compile`` (inductor, CPU) of a static-shape decode step beat ``model.generate``?

``python -m benchmarks.compile_decode [MODEL ...] [--modes default,max-autotune-no-cudagraphs]``: batch 16, 16-token
prompts, 64 sampled tokens (temperature 1, no EOS stop), one thread, CPU seconds (``time.process_time``).
Variants: ``model.generate``; ``LeanDecoder`` eager (sliced cache); the static step (full pre-allocated cache, key mask,
cache written by ``index_copy_`` at a position tensor) eager and compiled (fp32, bf16). Compile cost is the first
call's extra time, reported apart from steady state (median of 3 runs after warm-up).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

import torch
import torch._inductor.config
import torch.nn.functional as F

from benchmarks.fast_decode import LeanDecoder

B, P, NEW = 16, 16, 64


def attention(q, k, v, mask):
    """Explicit q·kᵀ / softmax / ·v: for one query row this is far cheaper than the CPU flash-attention kernel."""
    if k.shape[1] != q.shape[1]:
        k, v = (t.repeat_interleave(q.shape[1] // t.shape[1], 1) for t in (k, v))
    scores = (q @ k.transpose(-1, -2)).float() * q.shape[-1] ** -0.5
    return scores.masked_fill(~mask, float("-inf")).softmax(-1).to(q.dtype) @ v


def static_step(dec: LeanDecoder, ids, pos, cur, kc, vc, valid, sdpa=False) -> torch.Tensor:
    """One decode token. ids/pos [B, 1]; cur [1] cache slot; kc/vc [layers][B, nkv, S, hd]; valid [B, S] keys that
    exist (prompt mask, generated slots True). Every call has the same shapes, so one compiled graph serves all."""
    S = kc[0].shape[2]
    x = F.embedding(ids, dec.embed)
    freqs = pos[..., None].float() * dec.inv_freq
    emb = torch.cat([freqs, freqs], -1)
    cos, sin = emb.cos()[:, None].to(x.dtype), emb.sin()[:, None].to(x.dtype)
    key_mask = (valid & (torch.arange(S) <= cur))[:, None, None, :]
    qs, kvs = dec.nh * dec.hd, dec.nkv * dec.hd
    for i, (ln1, qkv_w, qkv_b, o_w, ln2, gu_w, d_w) in enumerate(dec.layers):
        q, k, v = F.linear(dec.rms(x, ln1), qkv_w, qkv_b).split([qs, kvs, kvs], -1)
        q = dec.rotate(q.view(B, 1, dec.nh, dec.hd).transpose(1, 2), cos, sin)
        kc[i].index_copy_(2, cur, dec.rotate(k.view(B, 1, dec.nkv, dec.hd).transpose(1, 2), cos, sin))
        vc[i].index_copy_(2, cur, v.view(B, 1, dec.nkv, dec.hd).transpose(1, 2))
        if sdpa:
            att = F.scaled_dot_product_attention(q, kc[i], vc[i], attn_mask=key_mask, enable_gqa=dec.nkv != dec.nh)
        else:
            att = attention(q, kc[i], vc[i], key_mask)
        x = x + F.linear(att.transpose(1, 2).reshape(B, 1, qs), o_w)
        gate, up = F.linear(dec.rms(x, ln2), gu_w).chunk(2, -1)
        x = x + F.linear(F.silu(gate) * up, d_w)
    return F.linear(dec.rms(x[:, -1], dec.norm), dec.head).float()


def cast(dec: LeanDecoder, dtype) -> LeanDecoder:
    """The decoder with every weight in ``dtype`` (rotary frequencies stay fp32)."""
    dec.embed, dec.norm, dec.head = (w.to(dtype) for w in (dec.embed, dec.norm, dec.head))
    dec.layers = [tuple(None if w is None else w.detach().to(dtype) for w in layer) for layer in dec.layers]
    rope = dec.rope  # the eager prefill's cos/sin must match the weights' dtype too
    dec.rope = lambda pos: tuple(t.to(dtype) for t in rope(pos))
    return dec


def pick(logits, greedy: bool, gen):
    return logits.argmax(-1) if greedy else torch.multinomial(logits.softmax(-1), 1, generator=gen).squeeze(-1)


@torch.no_grad()
def decode(dec: LeanDecoder, step, ids, greedy=False, gen=None, static=True) -> torch.Tensor:
    """Eager prefill (``dec.step``) then NEW-1 decode steps with ``step``; returns [B, NEW] tokens."""
    dtype, n = dec.embed.dtype, len(dec.layers)
    S = P + NEW
    kc = [torch.zeros(B, dec.nkv, S, dec.hd, dtype=dtype) for _ in range(n)]
    vc = [torch.zeros(B, dec.nkv, S, dec.hd, dtype=dtype) for _ in range(n)]
    pos = torch.arange(P).expand(B, P)
    logits = dec.step(ids, pos, kc, vc, 0, torch.ones(P, P, dtype=torch.bool).tril()[None, None]).float()
    valid = torch.ones(B, S, dtype=torch.bool)
    out = torch.empty(B, NEW, dtype=torch.long)
    for t in range(NEW):
        out[:, t] = tok = pick(logits, greedy, gen)
        if t == NEW - 1:
            break
        p = torch.full((B, 1), P + t)
        if static:
            logits = step(dec, tok[:, None], p, torch.tensor([P + t]), kc, vc, valid)
        else:
            logits = dec.step(tok[:, None], p, kc, vc, P + t, valid[:, None, None, : P + t + 1]).float()
    return out


def eager(sdpa: bool, fn=static_step):
    return lambda *a: fn(*a, sdpa=sdpa)


def clock(fn, children: bool = False) -> tuple[float, float]:
    """(CPU s, wall s) of one call; ``children`` adds the CPU time of waited-for subprocesses (gcc at compile)."""
    cpu = (lambda: sum(os.times()[:4])) if children else time.process_time
    c, w = cpu(), time.perf_counter()
    fn()
    return cpu() - c, time.perf_counter() - w


def steady(fn, repeats: int = 3) -> float:
    """Median CPU seconds of ``repeats`` calls after one warm-up."""
    fn()
    return statistics.median(clock(fn)[0] for _ in range(repeats))


def match_steps(a: torch.Tensor, b: torch.Tensor) -> int:
    """Steps t such that all rows agree on every token up to t."""
    bad = (a != b).any(0).nonzero()
    return int(bad[0]) if len(bad) else a.shape[1]


def bench_model(path: str, modes: list[str]) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(max(tok.all_special_ids) + 1, len(tok), (B, P), generator=gen)
    res: dict = {"model": path, "rows": {}, "errors": {}}

    def hf():
        with torch.no_grad():
            model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                top_k=0,
                top_p=1.0,
                temperature=1.0,
                max_new_tokens=NEW,
                min_new_tokens=NEW,
                pad_token_id=tok.pad_token_id,
            )

    def row(name, fn, compile_cost=None, match=None):
        s = steady(fn)
        res["rows"][name] = {"cpu_s": s, "tok_s": B * NEW / s, "compile": compile_cost, "greedy_match": match}
        print(name, json.dumps(res["rows"][name]), flush=True)

    row("model.generate", hf)
    hf_greedy = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=NEW)
    dec = LeanDecoder(model)
    ref = decode(dec, static_step, ids, greedy=True)
    res["lean_vs_hf_greedy_steps"] = match_steps(ref, hf_greedy[:, P:])
    row("lean eager (sliced cache, sdpa)", lambda: decode(dec, None, ids, gen=gen, static=False))
    for dtype in (torch.float32, torch.bfloat16):
        dt = str(dtype)[6:]
        d = cast(LeanDecoder(model), dtype)
        ref_d = decode(d, static_step, ids, greedy=True)
        for sdpa in (True, False) if dtype is torch.float32 else (False,):
            row(f"static eager {dt} {'sdpa' if sdpa else 'manual-attn'}", lambda: decode(d, eager(sdpa), ids, gen=gen))  # noqa: B023
        for mode, sdpa in [("default", True), *((m, False) for m in modes)]:
            name = f"compiled {dt} {'sdpa' if sdpa else 'manual-attn'} mode={mode}"
            torch._dynamo.reset()
            fn = torch.compile(static_step, mode=None if mode == "default" else mode, dynamic=False, fullgraph=True)
            step = eager(sdpa, fn)
            try:
                first = clock(lambda: decode(d, step, ids, greedy=True), children=True)  # noqa: B023
                out = decode(d, step, ids, greedy=True)
                second = clock(lambda: decode(d, step, ids, greedy=True), children=True)  # noqa: B023
                cost = {"cpu_s": first[0] - second[0], "wall_s": first[1] - second[1]}
                match = {"vs_eager_same_dtype": match_steps(out, ref_d), "vs_eager_fp32": match_steps(out, ref)}
                row(name, lambda: decode(d, step, ids, gen=gen), cost, match)  # noqa: B023
            except Exception as e:  # report it, go on with the next variant
                res["errors"][name] = f"{type(e).__name__}: {str(e)[:500]}"
                print(name, "ERROR", res["errors"][name], flush=True)
    base = res["rows"]["model.generate"]["tok_s"]
    for r in res["rows"].values():
        r["speedup"] = r["tok_s"] / base
    return res


def main() -> None:
    torch.set_num_threads(1)
    torch._inductor.config.compile_threads = 1  # compile in-process so process_time sees it
    torch._inductor.config.force_disable_caches = True  # measure a cold compile every time
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    modes = ["default", "max-autotune-no-cudagraphs"]
    for a in sys.argv[1:]:
        if a.startswith("--modes="):
            modes = a.split("=", 1)[1].split(",")
    for name in args or ["qwen2-4m"]:
        print(json.dumps(bench_model(f"benchmarks/out/models/{name}", modes)), flush=True)


if __name__ == "__main__":
    main()
