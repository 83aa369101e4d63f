"""The generation engine: batched sampling with a KV cache and left padding — the hot path of every RL loop.

One prefill forward over the left-padded prompts, then one forward per new token reusing the cache. Rows that finish
(EOS or a stop string) are dropped from the running batch and from the cache ("compaction"), so a batch where most
answers are short costs what the short answers cost. Used by training (collect), evaluation and serving alike; it
depends on nothing but the model, the tokenizer and the sampling settings.

The decode steps run through a decoder: ``LeanDecoder`` (float32 Llama / Qwen2 outside autocast: fused weights, a
pre-allocated KV cache written in place, no module stack; its greedy tokens are checked equal to the model's own) or
``CacheDecoder`` (the model's forward and transformers cache: every other model, peft, autocast). The prefill is
always the model's own forward.
"""

from __future__ import annotations

import hashlib
import inspect

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from rewardloop.config import GenerationConfig
from rewardloop.ops import position_ids_from_mask
from rewardloop.types import Rollout, pad_left


def eos_token_ids(model, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every token id that ends a response: the tokenizer's EOS and the model's generation-config EOS ids."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if gen_eos is not None:
        ids.update(int(i) for i in (gen_eos if isinstance(gen_eos, list) else [gen_eos]))
    return sorted(ids)


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: list[str]) -> list[list[int]]:
    """Token ids of each prompt, with the tokenizer's own special tokens (e.g. BOS) as in training."""
    return [list(ids) for ids in tokenizer(prompts, add_special_tokens=True)["input_ids"]]


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers, e.g. (run seed, group id, sample index): distinct tuples give unrelated streams."""
    digest = hashlib.blake2b(repr(tuple(int(p) for p in parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def row_uniforms(seeds: list[int], steps: int, device) -> torch.Tensor:
    """[B, steps] float64 uniforms in [0, 1): row b's come from its own generator seeded with ``seeds[b]``, so a row
    draws the same numbers alone, in any batch, on any worker."""
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    rows = [torch.rand(steps, generator=g, dtype=torch.float64) for g in gens]
    return (torch.stack(rows) if rows else torch.zeros(0, steps, dtype=torch.float64)).to(device)


def sample_next(
    logits: torch.Tensor,
    gen: GenerationConfig,
    generator: torch.Generator | None,
    uniforms: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick the next token from logits [B, V]; returns (tokens [B], log π(token) [B] under softmax(logits / T)).

    Temperature 0 is greedy (log-probs then use T = 1). Top-k / top-p only truncate what is sampled; the returned
    log-probs are of the temperature-scaled full distribution, which is what the training forward recomputes.
    ``uniforms`` [B] (per-row seeded sampling): row b takes the token where its cumulative probability first exceeds
    u_b (inverse-CDF sampling), instead of one ``torch.multinomial`` draw over the batch from ``generator``.
    """
    logits = logits.float()
    if gen.temperature == 0:
        tokens = logits.argmax(-1)
        return tokens, torch.log_softmax(logits, -1).gather(-1, tokens[:, None]).squeeze(-1)
    scaled = logits / gen.temperature  # [B, V]
    logp = torch.log_softmax(scaled, -1)
    filtered = scaled
    if gen.top_k > 0 and gen.top_k < filtered.shape[-1]:
        kth = torch.topk(filtered, gen.top_k, dim=-1).values[:, -1:]  # [B, 1]
        filtered = filtered.masked_fill(filtered < kth, float("-inf"))
    if gen.top_p < 1.0:
        sorted_logits, order = torch.sort(filtered, descending=True)
        cum = torch.softmax(sorted_logits, -1).cumsum(-1)
        drop_sorted = cum - torch.softmax(sorted_logits, -1) > gen.top_p  # keep the token that crosses top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        filtered = filtered.masked_fill(drop, float("-inf"))
    probs = torch.softmax(filtered, -1)
    if uniforms is not None:
        cdf = probs.double().cumsum(-1)  # [B, V]
        target = (uniforms * cdf[:, -1])[:, None]  # [B, 1]; right=True skips zero-probability tokens at u = 0
        tokens = torch.searchsorted(cdf, target, right=True).squeeze(-1).clamp(max=probs.shape[-1] - 1)
    else:
        tokens = torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # [B]
    return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)


def _hits_stop(tokenizer, ids: list[int], stops: list[str], tail_tokens: int) -> bool:
    tail = tokenizer.decode(ids[-tail_tokens:], skip_special_tokens=True)
    return any(s in tail for s in stops)


def _cut_at_stop(text: str, stops: list[str]) -> str:
    cuts = [text.index(s) for s in stops if s in text]
    return text[: min(cuts)] if cuts else text


def _cache_kwarg(model) -> str:
    """transformers ≥ 5.2x names the KV cache argument ``cache``; older releases ``past_key_values``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft wraps forward(*args, **kw)
    params = inspect.signature(base.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _forward(model, **kwargs):
    try:
        return model(**kwargs, logits_to_keep=1)
    except TypeError:  # architectures without logits_to_keep compute every position
        return model(**kwargs)


# -- decoders: the running rows' KV cache and one decode step -----------------------------------------------------------
def cache_to_kv(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (keys, values) [B, H, L, D] of every layer of a transformers cache (``DynamicCache.layers`` or older lists)."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache, strict=True))


class CacheDecoder:
    """Decode steps through the model's own forward and transformers cache: any architecture, peft, autocast.

    Rows are left-padded; ``attn`` [B, L] marks real columns, ``pos`` [B] is each row's next position.
    """

    def __init__(self, model, cache, attn: torch.Tensor, next_pos: torch.Tensor):
        self.model, self.cache, self.attn, self.pos = model, cache, attn, next_pos
        self.cache_arg = _cache_kwarg(model)

    def keep_rows(self, order: list[int]) -> None:
        """Row j becomes old row ``order[j]``; rows not named are dropped."""
        index = torch.tensor(order, device=self.attn.device)
        self.cache.batch_select_indices(index)
        self.attn, self.pos = self.attn[index], self.pos[index]

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed tokens [B] at each row's next position; returns the next logits [B, V]."""
        self.attn = torch.cat([self.attn, self.attn.new_ones(len(tokens), 1)], dim=1)
        kwargs = {"use_cache": True, self.cache_arg: self.cache}
        out = _forward(
            self.model, input_ids=tokens[:, None], attention_mask=self.attn, position_ids=self.pos[:, None], **kwargs
        )
        self.pos = self.pos + 1
        return out.logits[:, -1]


class LeanDecoder:
    """Decode steps for Llama / Qwen2 without the module stack: fused QKV and gate/up weights, one pre-allocated KV
    buffer per layer written in place, a per-row key bias instead of a rebuilt mask, a RoPE table by position.

    The running rows share a write column ``c``: row b's keys sit right-aligned in columns [start_b, c) (left padding,
    bias −inf, as after the prefill); a step writes every row's new key and value at column c and attends over
    columns [min_b start_b, c]. Positions are per row (``pos``), so a row sees the same positions alone or in any batch, and each
    row's arithmetic is the model's own: greedy tokens equal eager decoding's (tests/serve/test_engine_lean.py,
    benchmarks/decode_speed.py). The weights are read when the decoder is built: build a new one after an update.
    """

    ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM")

    @classmethod
    def supports(cls, model) -> bool:
        """True for an unwrapped float32 Llama or Qwen2 with default RoPE, SiLU, full attention, outside autocast
        (where its greedy tokens are checked equal to the model's own; other precisions keep the model's forward)."""
        cfg = getattr(model, "config", None)
        if type(model).__name__ not in cls.ARCHITECTURES or cfg is None:
            return False
        rope = getattr(getattr(model.model, "rotary_emb", None), "rope_type", None)
        dropout = model.training and getattr(cfg, "attention_dropout", 0.0) > 0
        first = next(model.parameters())
        return (
            first.dtype == torch.float32
            and rope == "default"
            and cfg.hidden_act == "silu"
            and not getattr(cfg, "use_sliding_window", False)
            and not dropout
            and not torch.is_autocast_enabled(first.device.type)
        )

    def __init__(self, model, rows: int, columns: int = 64):
        m, cfg = model.model, model.config
        attn = m.layers[0].self_attn
        self.heads, self.kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, attn.head_dim
        self.scaling, self.eps = attn.scaling, cfg.rms_norm_eps
        self.rotary, self.embed, self.norm, self.head = (
            m.rotary_emb,
            m.embed_tokens.weight,
            m.norm.weight,
            model.lm_head,
        )
        self.layers = [_fuse_layer(layer) for layer in m.layers]
        self.dtype, self.device = self.embed.dtype, self.embed.device
        self.cos = self.sin = torch.empty(0, self.head_dim, dtype=self.dtype, device=self.device)  # RoPE by position
        self.n, self.c, self.start = 0, 0, []  # rows, write column, each row's first real column
        self.k = self.v = self.bias = self.pos = None
        self._allocate(rows, columns, shift=0)

    def _allocate(self, rows: int, columns: int, shift: int) -> None:
        """New buffers k/v [rows, H, columns, D], bias [rows, columns], pos [rows]; the running rows' columns
        [lo, c) move to [lo + shift, c + shift), lo = max(0, −shift) (a negative shift drops leading columns)."""
        H, D, kw = self.kv_heads, self.head_dim, {"dtype": self.dtype, "device": self.device}
        old_k, old_v, old_bias, old_pos = self.k, self.v, self.bias, self.pos
        self.k = [torch.zeros(rows, H, columns, D, **kw) for _ in self.layers]
        self.v = [torch.zeros(rows, H, columns, D, **kw) for _ in self.layers]
        self.bias = torch.zeros(rows, columns, **kw)
        self.pos = torch.zeros(rows, dtype=torch.long, device=self.device)
        if not self.n:
            self.c = 0
            return
        n, lo, c = self.n, max(0, -shift), self.c
        for new, old in zip([*self.k, *self.v], [*old_k, *old_v], strict=True):
            new[:n, :, lo + shift : c + shift] = old[:n, :, lo:c]
        self.bias[:n, : lo + shift] = float("-inf")
        self.bias[:n, lo + shift : c + shift] = old_bias[:n, lo:c]
        self.pos[:n] = old_pos[:n]
        self.c, self.start = c + shift, [s + shift for s in self.start]

    def add_rows(self, cache, attn: torch.Tensor, next_pos: torch.Tensor) -> None:
        """Append the rows of a prefill: its transformers ``cache`` [k, H, P, D] per layer, left-padded with mask
        ``attn`` [k, P], and their next positions [k]."""
        k, P = attn.shape
        shift = max(0, P - self.c)  # the new rows need P columns before the write column
        rows, cols = self.k[0].shape[0], self.k[0].shape[2]
        if (shift and self.n) or self.n + k > rows or self.c + shift + 1 > cols:
            self._allocate(max(rows, self.n + k), max(cols, 2 * (self.c + shift + 1)), shift)
        new, c = slice(self.n, self.n + k), self.c if self.n else P
        for (keys, values), kb, vb in zip(cache_to_kv(cache), self.k, self.v, strict=True):
            kb[new, :, c - P : c], vb[new, :, c - P : c] = keys, values
        self.bias[new] = 0.0
        self.bias[new, : c - P] = float("-inf")
        self.bias[new, c - P : c].masked_fill_(attn == 0, float("-inf"))
        self.pos[new] = next_pos
        self.start += [c - P + int(pad) for pad in (attn == 0).sum(1).tolist()]
        self.n, self.c = self.n + k, c

    def keep_rows(self, order: list[int]) -> None:
        """Row j becomes old row ``order[j]``; rows not named are dropped. Only rows that move are copied; leading
        columns that no row uses any more are dropped once they are a quarter of the buffer."""
        moved = [(j, i) for j, i in enumerate(order) if i != j]
        if moved:
            dst, src = (torch.tensor(x, device=self.device) for x in zip(*moved, strict=True))
            for buf in [*self.k, *self.v, self.bias, self.pos]:
                buf[dst] = buf[src]
        self.start, self.n = [self.start[i] for i in order], len(order)
        if not self.n:
            self.c = 0
        elif (lo := min(self.start)) * 4 >= self.k[0].shape[2]:
            self._allocate(self.k[0].shape[0], self.k[0].shape[2], -lo)

    # -- one token -------------------------------------------------------------------------------------------------
    def _rope(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, ±sin [B, 1, D] at positions pos [B] (the model's rotary embedding, tabulated; sin negated on the first
        half, so that rotate_half(x)·sin = swap_halves(x)·±sin, exactly)."""
        need = int(pos.max()) + 1
        if need > len(self.cos):
            size = max(need, 2 * len(self.cos), 256)
            positions = torch.arange(size, device=self.device)[None]
            cos, sin = self.rotary(self.embed[:1], positions)
            first, second = sin[0].chunk(2, -1)
            self.cos, self.sin = cos[0], torch.cat([-first, second], -1)
        return self.cos[pos][:, None], self.sin[pos][:, None]

    def _rms(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """RMSNorm in one op (bitwise equal to the model's float32 formula)."""
        return F.rms_norm(x, weight.shape, weight, self.eps)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed tokens [B] (B = running rows) at each row's next position; returns the next logits [B, V]."""
        B, c, nh, nkv, D = self.n, self.c, self.heads, self.kv_heads, self.head_dim
        if c + 1 > self.k[0].shape[2]:
            self._allocate(self.k[0].shape[0], 2 * (c + 1), 0)
        cos, sin = self._rope(self.pos[:B])  # [B, 1, D]
        lo = min(self.start)  # columns before every row's first real one are skipped
        bias = self.bias[:B, None, None, lo : c + 1]  # [B, 1, 1, W], W = c + 1 - lo
        x = F.embedding(tokens, self.embed)  # [B, hidden]
        for (ln1, qkv_w, qkv_b, o_proj, ln2, gu_w, gu_b, down), kb, vb in zip(self.layers, self.k, self.v, strict=True):
            qkv = F.linear(self._rms(x, ln1), qkv_w, qkv_b)  # [B, (nh + 2 nkv) D]
            qk = qkv[:, : (nh + nkv) * D].view(B, nh + nkv, D)
            half1, half2 = qk.chunk(2, -1)
            qk = qk * cos + torch.cat([half2, half1], -1) * sin  # RoPE on queries and keys at once
            kb[:B, :, c], vb[:B, :, c] = qk[:, nh:], qkv[:, (nh + nkv) * D :].view(B, nkv, D)
            q = qk[:, :nh].reshape(B, nkv, nh // nkv, D)  # query heads grouped by their key head
            scores = torch.add(bias, q @ kb[:B, :, lo : c + 1].transpose(-1, -2), alpha=self.scaling)  # [B, nkv, g, W]
            att = scores.softmax(-1) @ vb[:B, :, lo : c + 1]  # [B, nkv, g, D]
            x = x + o_proj(att.reshape(B, nh * D))
            gate, up = F.linear(self._rms(x, ln2), gu_w, gu_b).chunk(2, -1)
            x = x + down(F.silu(gate) * up)
        self.c += 1
        self.pos[:B] += 1
        return self.head(self._rms(x, self.norm))


def _fuse_layer(layer) -> tuple:
    """A decoder layer's weights for the lean step: norms, fused q/k/v (weight, bias), o_proj, fused gate/up, down."""
    a, mlp = layer.self_attn, layer.mlp

    def cat(*parts):
        return None if parts[0] is None else torch.cat(parts).detach()

    qkv = (a.q_proj, a.k_proj, a.v_proj)
    gate_up = (mlp.gate_proj, mlp.up_proj)
    return (
        layer.input_layernorm.weight,
        cat(*(p.weight for p in qkv)),
        cat(*(p.bias for p in qkv)),
        a.o_proj,
        layer.post_attention_layernorm.weight,
        cat(*(p.weight for p in gate_up)),
        cat(*(p.bias for p in gate_up)),
        mlp.down_proj,
    )


def make_decoder(model, cache, attn: torch.Tensor, next_pos: torch.Tensor, columns: int):
    """The decoder for the rows of a prefill: ``LeanDecoder`` where it supports the model, else ``CacheDecoder``."""
    if not LeanDecoder.supports(model):
        return CacheDecoder(model, cache, attn, next_pos)
    decoder = LeanDecoder(model, rows=len(attn), columns=columns)
    decoder.add_rows(cache, attn, next_pos)
    return decoder


@torch.no_grad()
def generate(
    model,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    gen: GenerationConfig,
    *,
    generator: torch.Generator | None = None,
    prompt_token_ids: list[list[int]] | None = None,
    row_seeds: list[int] | None = None,
) -> Rollout:
    """Sample one response per prompt. Returns a ``Rollout`` (ids, masks, sampling log-probs, texts) on the model's device.

    ``generator`` (a seeded torch.Generator on the model's device) makes sampling reproducible. ``row_seeds`` (one per
    prompt) instead seeds each row's sampling on its own, so a row's tokens do not depend on which other rows share
    its batch (up to float round-off between batch shapes): how a batch split over Ray workers equals a local run.
    """
    device = next(model.parameters()).device
    ids = prompt_token_ids if prompt_token_ids is not None else encode_prompts(tokenizer, prompts)
    if any(len(x) == 0 for x in ids):
        raise ValueError("empty prompt: every prompt needs at least one token")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    prompt_ids, prompt_mask = (t.to(device) for t in pad_left(ids, pad_id))
    B, T = prompt_ids.shape[0], gen.max_new_tokens
    eos = torch.tensor(eos_token_ids(model, tokenizer), device=device)
    tail_tokens = max((len(s) for s in gen.stop), default=0) + 4

    response_ids = torch.full((B, T), pad_id, dtype=torch.long, device=device)
    response_mask = torch.zeros((B, T), dtype=torch.long, device=device)
    logprobs = torch.zeros((B, T), dtype=torch.float32, device=device)
    finished = torch.zeros(B, dtype=torch.bool, device=device)

    # 1. Prefill: one forward over all prompts fills the KV cache.
    positions = position_ids_from_mask(prompt_mask)
    out = _forward(model, input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=positions, use_cache=True)
    cache, logits = getattr(out, "cache", None) or out.past_key_values, out.logits[:, -1]  # logits [B, V]
    decoder = make_decoder(model, cache, prompt_mask, positions[:, -1] + 1, columns=prompt_ids.shape[1] + T + 1)
    active = torch.arange(B, device=device)  # rows still generating
    u = row_uniforms(row_seeds, T, device) if row_seeds is not None and gen.temperature > 0 else None  # [B, T]

    for t in range(T):
        # 2. Sample a token for every running row.
        tokens, lp = sample_next(logits, gen, generator, None if u is None else u[active, t])
        response_ids[active, t], logprobs[active, t], response_mask[active, t] = tokens, lp, 1
        done = (tokens[:, None] == eos).any(-1)  # [B]
        if gen.stop:
            rows = active.tolist()
            hits = [_hits_stop(tokenizer, response_ids[r, : t + 1].tolist(), gen.stop, tail_tokens) for r in rows]
            done |= torch.tensor(hits, device=device)
        finished[active[done]] = True
        keep = ~done
        if t == T - 1 or not keep.any():
            break
        # 3. Compaction: drop finished rows from the batch and the cache.
        if not keep.all():
            kept = keep.nonzero().squeeze(-1)
            decoder.keep_rows(kept.tolist())
            active, tokens = active[kept], tokens[kept]
        # 4. Decode step: feed the sampled tokens.
        logits = decoder.step(tokens)

    width = int(response_mask.sum(1).max().item()) if B else 0  # trim columns nobody used
    response_ids, response_mask, logprobs = response_ids[:, :width], response_mask[:, :width], logprobs[:, :width]
    texts = tokenizer.batch_decode(response_ids.masked_fill(response_mask == 0, pad_id), skip_special_tokens=True)
    if gen.stop:
        texts = [_cut_at_stop(text, gen.stop) for text in texts]
    return Rollout(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        response_ids=response_ids,
        response_mask=response_mask,
        logprobs=logprobs,
        finished=finished,
        prompts=list(prompts),
        responses=texts,
    )
