"""The generation engine: batched sampling with a KV cache and left padding — the hot path of every RL loop.

One prefill forward over the left-padded prompts, then one forward per new token reusing the cache. Rows that finish
(EOS or a stop string) are dropped from the running batch and from the cache ("compaction"), so a batch where most
answers are short costs what the short answers cost. Used by training (collect), evaluation and serving alike; it
depends on nothing but the model, the tokenizer and the sampling settings.
"""

from __future__ import annotations

import inspect

import torch
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


def sample_next(
    logits: torch.Tensor, gen: GenerationConfig, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick the next token from logits [B, V]; returns (tokens [B], log π(token) [B] under softmax(logits / T)).

    Temperature 0 is greedy (log-probs then use T = 1). Top-k / top-p only truncate what is sampled; the returned
    log-probs are of the temperature-scaled full distribution, which is what the training forward recomputes.
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


@torch.no_grad()
def generate(
    model,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    gen: GenerationConfig,
    *,
    generator: torch.Generator | None = None,
    prompt_token_ids: list[list[int]] | None = None,
) -> Rollout:
    """Sample one response per prompt. Returns a ``Rollout`` (ids, masks, sampling log-probs, texts) on the model's device.

    ``generator`` (a seeded torch.Generator on the model's device) makes sampling reproducible.
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
    cache_arg = _cache_kwarg(model)
    attn, next_pos = prompt_mask, positions[:, -1] + 1  # [B, P], [B]
    active = torch.arange(B, device=device)  # rows still generating

    for t in range(T):
        # 2. Sample a token for every running row.
        tokens, lp = sample_next(logits, gen, generator)
        response_ids[active, t], logprobs[active, t], response_mask[active, t] = tokens, lp, 1
        done = torch.isin(tokens, eos)
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
            cache.batch_select_indices(kept)
            active, attn, tokens, next_pos = active[kept], attn[kept], tokens[kept], next_pos[kept]
        # 4. Decode step: feed the sampled token, extend the mask.
        attn = torch.cat([attn, attn.new_ones(attn.shape[0], 1)], dim=1)
        out = _forward(
            model,
            input_ids=tokens[:, None],
            attention_mask=attn,
            position_ids=next_pos[:, None],
            use_cache=True,
            **{cache_arg: cache},
        )
        logits, next_pos = out.logits[:, -1], next_pos + 1

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
