"""Experiment: a lean decode loop for Llama / Qwen2 models (fused QKV and gate/up weights, a pre-allocated KV
cache written in place, plain functional calls instead of ~60 module calls per token).

Measured against rewardloop's engine and ``model.generate`` in ``python -m benchmarks.fast_decode``; it is the
evidence for the engine optimisation proposed in docs/benchmarks.md, not a code path the library uses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class LeanDecoder:
    """Weights of a Llama/Qwen2 ``model`` regrouped for few, larger matmuls; ``step`` runs one forward."""

    def __init__(self, model) -> None:
        cfg = model.config
        self.nh, self.nkv = cfg.num_attention_heads, cfg.num_key_value_heads
        self.hd = cfg.hidden_size // self.nh
        self.eps = cfg.rms_norm_eps
        theta = (getattr(cfg, "rope_parameters", None) or {}).get("rope_theta", getattr(cfg, "rope_theta", 10000.0))
        self.inv_freq = 1.0 / (theta ** (torch.arange(0, self.hd, 2, dtype=torch.float32) / self.hd))
        m = model.model
        self.embed, self.norm, self.head = m.embed_tokens.weight, m.norm.weight, model.lm_head.weight
        self.layers = []
        for layer in m.layers:
            a, mlp = layer.self_attn, layer.mlp
            qkv_w = torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]).detach()
            biases = [p.bias for p in (a.q_proj, a.k_proj, a.v_proj)]
            qkv_b = torch.cat(biases).detach() if biases[0] is not None else None
            gate_up = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).detach()
            self.layers.append(
                (
                    layer.input_layernorm.weight,
                    qkv_w,
                    qkv_b,
                    a.o_proj.weight,
                    layer.post_attention_layernorm.weight,
                    gate_up,
                    mlp.down_proj.weight,
                )
            )

    def rms(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))

    def rope(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = pos[..., None].float() * self.inv_freq  # [B, L, hd/2]
        emb = torch.cat([freqs, freqs], -1)
        return emb.cos()[:, None], emb.sin()[:, None]  # [B, 1, L, hd]

    @staticmethod
    def rotate(x, cos, sin):
        x1, x2 = x.chunk(2, -1)
        return x * cos + torch.cat([-x2, x1], -1) * sin

    def step(self, ids, pos, k_cache, v_cache, start: int, key_mask) -> torch.Tensor:
        """ids/pos [B, L]; caches [layers][B, nkv, S, hd] written at [start, start+L); key_mask [B, 1, L, start+L]
        (True = attend). Returns last-position logits [B, V]."""
        B, L = ids.shape
        x = F.embedding(ids, self.embed)
        cos, sin = self.rope(pos)
        q_size, kv_size = self.nh * self.hd, self.nkv * self.hd
        end = start + L
        for i, (ln1, qkv_w, qkv_b, o_w, ln2, gu_w, d_w) in enumerate(self.layers):
            h = F.linear(self.rms(x, ln1), qkv_w, qkv_b)
            q, k, v = h.split([q_size, kv_size, kv_size], -1)
            q = self.rotate(q.view(B, L, self.nh, self.hd).transpose(1, 2), cos, sin)
            k = self.rotate(k.view(B, L, self.nkv, self.hd).transpose(1, 2), cos, sin)
            k_cache[i][:, :, start:end] = k
            v_cache[i][:, :, start:end] = v.view(B, L, self.nkv, self.hd).transpose(1, 2)
            att = F.scaled_dot_product_attention(
                q,
                k_cache[i][:, :, :end],
                v_cache[i][:, :, :end],
                attn_mask=key_mask,
                enable_gqa=self.nkv != self.nh,
            )
            x = x + F.linear(att.transpose(1, 2).reshape(B, L, q_size), o_w)
            gate, up = F.linear(self.rms(x, ln2), gu_w).chunk(2, -1)
            x = x + F.linear(F.silu(gate) * up, d_w)
        return F.linear(self.rms(x[:, -1], self.norm), self.head)


@torch.no_grad()
def lean_generate(dec: LeanDecoder, prompt_ids, prompt_mask, max_new: int, eos: torch.Tensor, sample, generator):
    """Prefill + decode with compaction; returns response ids [B, T], mask [B, T], log-probs [B, T]."""
    B, P = prompt_ids.shape
    S = P + max_new
    n_layers = len(dec.layers)
    kc = [torch.zeros(B, dec.nkv, S, dec.hd) for _ in range(n_layers)]
    vc = [torch.zeros(B, dec.nkv, S, dec.hd) for _ in range(n_layers)]
    valid = torch.zeros(B, S, dtype=torch.bool)
    valid[:, :P] = prompt_mask.bool()
    pos = (prompt_mask.long().cumsum(-1) - 1).clamp(min=0)
    causal = torch.ones(P, P, dtype=torch.bool).tril()
    mask = causal[None] & valid[:, None, :P]
    mask |= torch.eye(P, dtype=torch.bool)[None]  # padded queries see themselves (no all-masked rows)
    logits = dec.step(prompt_ids, pos, kc, vc, 0, mask[:, None])
    resp = torch.zeros(B, max_new, dtype=torch.long)
    rmask = torch.zeros(B, max_new, dtype=torch.long)
    logp = torch.zeros(B, max_new)
    active = torch.arange(B)
    next_pos = pos[:, -1] + 1
    for t in range(max_new):
        tokens, lp = sample(logits, generator)
        resp[active, t], logp[active, t], rmask[active, t] = tokens, lp, 1
        keep = ~torch.isin(tokens, eos)
        if t == max_new - 1 or not keep.any():
            break
        if not keep.all():
            kept = keep.nonzero().squeeze(-1)
            kc, vc = [c[kept] for c in kc], [c[kept] for c in vc]
            active, tokens, next_pos, valid = active[kept], tokens[kept], next_pos[kept], valid[kept]
        valid[:, P + t] = True
        logits = dec.step(tokens[:, None], next_pos[:, None], kc, vc, P + t, valid[:, None, None, : P + t + 1])
        next_pos = next_pos + 1
    return resp, rmask, logp


def cpu_seconds(fn, repeats: int = 2) -> float:
    """Process CPU seconds per call (robust to other jobs on a shared machine, unlike wall time)."""
    import time

    fn()
    c0 = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - c0) / repeats


def main() -> None:
    """``python -m benchmarks.fast_decode [MODEL_DIR] [THREADS]``: greedy parity with the engine, then CPU seconds
    of 64 sampled tokens for 16 prompts: engine vs lean decoder vs ``model.generate``."""
    import json
    import sys

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rewardloop.config import GenerationConfig
    from rewardloop.rollout import generate, sample_next

    torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    d = sys.argv[1] if len(sys.argv) > 1 else "benchmarks/out/models/qwen2-4m"
    tok = AutoTokenizer.from_pretrained(d)
    model = AutoModelForCausalLM.from_pretrained(d).eval()
    dec = LeanDecoder(model)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(max(tok.all_special_ids) + 1, len(tok), (16, 16), generator=g)
    ids[:3, :5] = tok.pad_token_id  # left padding on three rows
    mask = (ids != tok.pad_token_id).long()
    eos = torch.tensor([tok.eos_token_id])
    greedy = GenerationConfig(max_new_tokens=64, temperature=0.0)
    unpadded = [row[m.bool()].tolist() for row, m in zip(ids, mask, strict=True)]
    ref = generate(model, tok, [""] * 16, greedy, prompt_token_ids=unpadded)
    resp, rmask, logp = lean_generate(dec, ids, mask, 64, eos, lambda lg, gen: sample_next(lg, greedy, gen), None)
    T = ref.response_ids.shape[1]
    parity = torch.equal(ref.response_ids * ref.response_mask, (resp * rmask)[:, :T])
    samp = GenerationConfig(max_new_tokens=64, temperature=1.0)
    ones = torch.ones_like(ids)
    result = {
        "greedy_parity": parity,
        "max_logprob_diff": float((ref.logprobs - logp[:, :T]).abs().max()),
        "cpu_seconds": {
            "engine": cpu_seconds(
                lambda: generate(model, tok, [""] * 16, samp, prompt_token_ids=ids.tolist(), generator=g)
            ),
            "lean": cpu_seconds(
                lambda: lean_generate(dec, ids, ones, 64, eos, lambda lg, gen: sample_next(lg, samp, gen), g)
            ),
            "model.generate": cpu_seconds(
                lambda: model.generate(
                    input_ids=ids,
                    attention_mask=ones,
                    do_sample=True,
                    top_k=0,
                    max_new_tokens=64,
                    pad_token_id=tok.pad_token_id,
                )
            ),
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
