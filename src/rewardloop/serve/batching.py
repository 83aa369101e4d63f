"""Pure pieces of continuous batching: KV-cache rows in and out of a running batch, and per-row sampling.

The running batch is left-padded like ``rollout.engine``: row ``b`` holds its tokens in the last columns of the cache
and ``attn[b]`` marks which columns are real; positions are tracked per row, so a row's keys and queries see the same
positions whether it runs alone or next to others. A KV cache here is a list over layers of ``(keys, values)``,
each ``[B, H, L, D]`` (the layout of transformers' ``DynamicCache`` layers).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from tokenizers import decoders

from rewardloop.rollout.engine import CacheDecoder, cache_to_kv

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values [B, H, L, D]


def kv_into_cache(cache, kv: KV) -> None:
    """Replace the tensors of ``cache`` in place by ``kv`` (the cache object keeps its type and layer classes)."""
    if hasattr(cache, "layers"):
        for layer, (k, v) in zip(cache.layers, kv, strict=True):
            layer.keys, layer.values = k, v
    else:
        cache.key_cache[:] = [k for k, _ in kv]
        cache.value_cache[:] = [v for _, v in kv]


def pad_kv_left(kv: KV, attn: torch.Tensor, length: int) -> tuple[KV, torch.Tensor]:
    """Left-pad every layer's keys/values [B, H, L, D] and the mask [B, L] with zeros to ``length`` columns."""
    extra = length - attn.shape[1]
    if extra <= 0:
        return kv, attn
    padded = [
        (torch.nn.functional.pad(k, (0, 0, extra, 0)), torch.nn.functional.pad(v, (0, 0, extra, 0))) for k, v in kv
    ]
    return padded, torch.nn.functional.pad(attn, (extra, 0))


def merge_kv(a: KV, attn_a: torch.Tensor, b: KV, attn_b: torch.Tensor) -> tuple[KV, torch.Tensor]:
    """Rows of ``b`` appended after the rows of ``a``: both left-padded to the longer length, concatenated on batch.

    Returns (kv [Ba + Bb, H, L, D] per layer, attn [Ba + Bb, L]) with L = max(La, Lb).
    """
    length = max(attn_a.shape[1], attn_b.shape[1])
    a, attn_a = pad_kv_left(a, attn_a, length)
    b, attn_b = pad_kv_left(b, attn_b, length)
    kv = [(torch.cat([ka, kb]), torch.cat([va, vb])) for (ka, va), (kb, vb) in zip(a, b, strict=True)]
    return kv, torch.cat([attn_a, attn_b])


def select_kv(kv: KV, attn: torch.Tensor, rows: torch.Tensor) -> tuple[KV, torch.Tensor]:
    """Keep ``rows`` (indices [K]) and drop the leading columns that are padding in every kept row."""
    attn = attn.index_select(0, rows)
    used = attn.any(0).nonzero()
    start = int(used[0]) if len(used) else attn.shape[1]
    kv = [(k.index_select(0, rows)[:, :, start:], v.index_select(0, rows)[:, :, start:]) for k, v in kv]
    return kv, attn[:, start:]


class CacheRows(CacheDecoder):
    """The running batch through the model's own forward and transformers cache (models ``LeanDecoder`` does not
    support): rows join left-padded to a common length and leave with the columns no kept row uses."""

    def add_rows(self, cache, attn: torch.Tensor, next_pos: torch.Tensor) -> None:
        """Append the rows of a prefill: its ``cache``, mask ``attn`` [k, P] and next positions [k]."""
        kv, self.attn = merge_kv(cache_to_kv(self.cache), self.attn, cache_to_kv(cache), attn)
        kv_into_cache(self.cache, kv)
        self.pos = torch.cat([self.pos, next_pos])

    def keep_rows(self, order: list[int]) -> None:
        """Row j becomes old row ``order[j]``; rows not named are dropped."""
        index = torch.tensor(order, device=self.attn.device)
        kv, self.attn = select_kv(cache_to_kv(self.cache), self.attn, index)
        kv_into_cache(self.cache, kv)
        self.pos = self.pos[index]


def fill_holes(n: int, removed: list[int]) -> list[int]:
    """The rows of a batch of ``n`` that stay when ``removed`` leave, with rows from the end moved into the holes
    (a decoder then copies only those): new row j is old row ``order[j]``."""
    gone = set(removed)
    size = n - len(gone)
    order = list(range(size))
    holes = [j for j in order if j in gone]
    tail = [i for i in range(size, n) if i not in gone]
    for j, i in zip(holes, tail, strict=True):
        order[j] = i
    return order


def sample_rows(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_p: torch.Tensor,
    top_k: torch.Tensor,
    uniform: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The next token of every row with its own settings: logits [B, V], temperature/top_p/uniform [B], top_k [B].

    Temperature 0 is greedy. Otherwise the token is the inverse CDF at ``uniform[b]`` (a draw from the row's own
    generator) of softmax(logits / T) truncated to top-k / top-p — so a seeded row samples the same tokens whatever
    else is in the batch. Returns (tokens [B], log π(token) [B], log π [B, V]) where π = softmax(logits / T) over
    the full vocabulary (T = 1 for greedy rows), as ``rollout.engine.sample_next`` reports them.
    """
    logits = logits.float()
    greedy = temperature <= 0
    if bool(greedy.all()):  # no sampled row: skip the sort
        logp = torch.log_softmax(logits, -1)
        tokens = logits.argmax(-1)
        return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1), logp
    temp = torch.where(greedy, torch.ones_like(temperature), temperature).to(logits)[:, None]  # [B, 1]
    logp = torch.log_softmax(logits / temp, -1)  # [B, V]
    sorted_p, order = torch.sort(logp.exp(), dim=-1, descending=True)  # [B, V]
    rank = torch.arange(logits.shape[-1], device=logits.device)[None]  # [1, V]
    keep = sorted_p.cumsum(-1) - sorted_p <= top_p.to(logits)[:, None]  # the token crossing top_p stays
    keep &= (top_k[:, None] <= 0) | (rank < top_k[:, None])
    cdf = (sorted_p * keep).cumsum(-1)  # [B, V]
    target = (uniform.to(logits) * cdf[:, -1])[:, None]  # [B, 1], below the total mass
    pick = torch.searchsorted(cdf, target, right=True).clamp(max=logits.shape[-1] - 1)  # [B, 1]
    sampled = order.gather(-1, pick).squeeze(-1)
    tokens = torch.where(greedy, logits.argmax(-1), sampled)  # [B]
    return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1), logp


def tail_decoder(tokenizer) -> Callable[[list[int]], str] | None:
    """``decode(ids)`` (special tokens skipped) for a byte-level BPE tokenizer without space clean-up, whose text
    splits at any complete character: text(a + b) = text(a) + text(b) when text(a) does not end in an incomplete
    character (U+FFFD). None for other tokenizers, which must decode the whole sequence each time."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or getattr(tokenizer, "clean_up_tokenization_spaces", False):
        return None
    if not isinstance(backend.decoder, decoders.ByteLevel):
        return None
    return functools.partial(backend.decode, skip_special_tokens=True)


def held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters of ``text`` a stream must not send yet: a possible start of a stop string, or an
    incomplete UTF-8 character (decoded as U+FFFD) that the next token may complete."""
    n = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), n, -1):
            if text.endswith(stop[:k]):
                n = k
                break
    while n < len(text) and text[len(text) - n - 1] == "\ufffd":
        n += 1
    return n


def cut_at_stop(text: str, stops: list[str], start: int = 0) -> tuple[str, bool]:
    """``text`` cut before the first stop string found at or after ``start`` (an index into ``text``), and whether
    one was found."""
    hits = [i for s in stops if (i := text.find(s, start)) >= 0]
    return (text[: min(hits)], True) if hits else (text, False)
