"""Continuous batching: one thread owns the model and a running decode batch that requests join and leave.

Each ``step()``:
  1. admit waiting requests (up to ``max_batch`` rows): one prefill forward over their left-padded prompts, whose KV
     cache and last logits join the running batch's decoder (``LeanDecoder.add_rows``: a pre-allocated cache and a
     lean decode step, for float32 Llama / Qwen2; else ``batching.CacheRows``: the model's own forward and cache);
  2. sample one token for every row with the row's own temperature / top-p / top-k and generator
     (``batching.sample_rows``);
  3. emit it to the request's sink (text delta held back at a possible stop string), and finish rows at EOS, a stop
     string or max_tokens;
  4. drop finished and cancelled rows from the cache (rows from the end fill their places: ``batching.fill_holes``);
  5. one decode step of the sampled tokens for the remaining rows → the logits of the next step.
A request therefore waits at most one step to start, and a finished one frees its row at once — the decode batch is
not one request at a time, nor a fixed batch waiting for its slowest row (vLLM / Orca's iteration-level scheduling).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from rewardloop.ops import position_ids_from_mask
from rewardloop.rollout import eos_token_ids
from rewardloop.rollout.engine import LeanDecoder
from rewardloop.serve.batching import CacheRows, cut_at_stop, fill_holes, held_back, sample_rows, tail_decoder
from rewardloop.types import pad_left

log = logging.getLogger(__name__)


@dataclass
class SamplingParams:
    """One row's sampling settings (an OpenAI request's, after defaults)."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    top_logprobs: int = 0  # how many alternatives to report per token (0 = none)


@dataclass
class Delta:
    """What one step produced for one row: the token, its log-prob, the text that may now be sent, and — on the last
    delta — why the row finished ("stop" or "length"; "error" with ``error`` set)."""

    token_id: int
    logprob: float
    text: str
    top_logprobs: list[tuple[int, float]] | None = None
    finish_reason: str | None = None
    error: str | None = None


@dataclass
class Sequence:
    """A request's row: its prompt, settings, where its deltas go and what it has generated so far."""

    prompt_ids: list[int]
    params: SamplingParams
    sink: Callable[[Delta], None]
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    text: str = ""  # the decoded completion, cut at a stop string once one appears
    decoded: int = 0  # tokens whose text ends on a complete character: ``decoded_text`` (decoding resumes there)
    decoded_text: str = ""
    sent: int = 0  # characters of ``text`` already emitted
    finish_reason: str | None = None
    cancelled: bool = False
    generator: torch.Generator | None = None

    def cancel(self) -> None:
        """Drop this row at the next step (a client that went away)."""
        self.cancelled = True


class ContinuousBatcher:
    """The serving engine. ``submit`` from any thread; ``step`` only from one (``start()`` runs it in a thread)."""

    def __init__(self, model, tokenizer, *, max_batch: int = 32, seed: int = 0):
        self.model, self.tokenizer, self.max_batch = model, tokenizer, max_batch
        self.device = next(model.parameters()).device
        self.eos = set(eos_token_ids(model, tokenizer))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.max_positions = getattr(model.config, "max_position_embeddings", None)
        self._tail_decode = tail_decoder(tokenizer)
        self._lean = LeanDecoder.supports(model)  # the fast decode step; else the model's forward and cache
        self._generator = torch.Generator().manual_seed(seed)  # draws of rows without their own seed
        self._waiting: deque[Sequence] = deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        # the running batch: rows, their decoder (KV cache, positions) and pending logits [B, V]
        self.rows: list[Sequence] = []
        self._decoder: LeanDecoder | CacheRows | None = None
        self._logits = None
        self.stats = {"steps": 0, "max_rows": 0, "shared_steps": 0, "tokens": 0, "prefills": 0}

    # -- requests ----------------------------------------------------------------------------------------------
    def submit(self, prompt_ids: list[int], params: SamplingParams, sink: Callable[[Delta], None]) -> Sequence:
        """Queue a row; it joins the running batch at the next step. Raises ValueError for an impossible request."""
        self.check(prompt_ids, params)
        seq = Sequence(list(prompt_ids), params, sink)
        if params.seed is not None:
            seq.generator = torch.Generator().manual_seed(params.seed)
        with self._wake:
            self._waiting.append(seq)
            self._wake.notify()
        return seq

    def check(self, prompt_ids: list[int], params: SamplingParams) -> None:
        """Raise ValueError when the prompt is empty or prompt + max_tokens exceed the model's positions."""
        if not prompt_ids:
            raise ValueError("prompt: empty (at least one token is needed)")
        if self.max_positions is not None and len(prompt_ids) + params.max_tokens > self.max_positions:
            raise ValueError(
                f"prompt: {len(prompt_ids)} tokens + max_tokens {params.max_tokens} exceed the model's context "
                f"of {self.max_positions} positions"
            )

    # -- the thread ----------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="rewardloop-serve-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def busy(self) -> bool:
        """Whether requests are running or waiting (a retiring engine stops when this turns False)."""
        with self._wake:
            return bool(self.rows or self._waiting)

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and not self._waiting and not self.rows:
                    self._wake.wait()
                if self._stopping:
                    break
            try:
                self.step()
            except Exception as e:  # a failed forward fails the rows in flight, not the server
                log.exception("engine step failed")
                self._fail_all(f"{type(e).__name__}: {e}")
        self._fail_all("server shutting down")

    def _fail_all(self, message: str) -> None:
        with self._wake:
            failed, self._waiting = [*self.rows, *self._waiting], deque()
        self.rows, self._decoder, self._logits = [], None, None
        for seq in failed:
            seq.finish_reason = "error"
            seq.sink(Delta(-1, 0.0, "", finish_reason="error", error=message))

    # -- one iteration -------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self) -> bool:
        """Admit, sample, emit, drop, decode. Returns False when there was nothing to do."""
        self._drop([i for i, s in enumerate(self.rows) if s.cancelled])
        self._admit()
        if not self.rows:
            return False
        B = len(self.rows)
        self.stats["steps"] += 1
        self.stats["max_rows"] = max(self.stats["max_rows"], B)
        self.stats["shared_steps"] += B > 1
        self.stats["tokens"] += B

        # 2. Sample every row with its own settings.
        p = [s.params for s in self.rows]
        uniform = torch.tensor([self._uniform(s) if s.params.temperature > 0 else 0.0 for s in self.rows])
        tokens, logp, logp_all = sample_rows(
            self._logits,
            torch.tensor([x.temperature for x in p], device=self.device),
            torch.tensor([x.top_p for x in p], device=self.device),
            torch.tensor([x.top_k for x in p], device=self.device),
            uniform.to(self.device),
        )
        k = max(x.top_logprobs for x in p)
        top = torch.topk(logp_all, k, dim=-1) if k else None

        # 3. Emit; 4. drop finished rows.
        token_list, logp_list = tokens.tolist(), logp.tolist()
        finished = []
        for i, seq in enumerate(self.rows):
            alts = None
            if seq.params.top_logprobs:
                n = seq.params.top_logprobs
                alts = list(zip(top.indices[i, :n].tolist(), top.values[i, :n].tolist(), strict=True))
            if self._advance(seq, token_list[i], logp_list[i], alts):
                finished.append(i)
        order = self._drop(finished)
        if not self.rows:
            return True

        # 5. Decode the sampled tokens of the rows still running.
        fed = tokens[torch.tensor(order, device=self.device)] if finished else tokens
        self._logits = self._decoder.step(fed)
        return True

    def _prefill(self, ids, attn, positions):
        kwargs = {"input_ids": ids, "attention_mask": attn, "position_ids": positions, "use_cache": True}
        try:
            return self.model(**kwargs, logits_to_keep=1)
        except TypeError:  # models without logits_to_keep
            return self.model(**kwargs)

    def _admit(self) -> None:
        """1. Prefill the waiting requests that fit and merge them into the running batch."""
        with self._wake:
            room = self.max_batch - len(self.rows)
            new = [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]
        new = [s for s in new if not s.cancelled]
        if not new:
            return
        ids, attn = (t.to(self.device) for t in pad_left([s.prompt_ids for s in new], self.pad_id))
        positions = position_ids_from_mask(attn)
        out = self._prefill(ids, attn, positions)
        cache = getattr(out, "cache", None) or out.past_key_values
        logits, next_pos = out.logits[:, -1], positions[:, -1] + 1
        self.stats["prefills"] += 1
        if self._decoder is not None:
            self._decoder.add_rows(cache, attn, next_pos)
            self._logits = torch.cat([self._logits, logits])
        elif self._lean:  # a new batch reads the weights as they are now
            self._decoder = LeanDecoder(self.model, rows=self.max_batch, columns=2 * attn.shape[1] + 64)
            self._decoder.add_rows(cache, attn, next_pos)
            self._logits = logits
        else:
            self._decoder, self._logits = CacheRows(self.model, cache, attn, next_pos), logits
        self.rows.extend(new)

    def _drop(self, rows: list[int]) -> list[int]:
        """Drop ``rows`` from the batch (rows from the end fill their places); returns the order kept: new row j is
        old row order[j]."""
        order = fill_holes(len(self.rows), rows)
        if not rows:
            return order
        self.rows = [self.rows[i] for i in order]
        if not order:
            self._decoder = self._logits = None
            return order
        self._decoder.keep_rows(order)
        self._logits = self._logits[torch.tensor(order, device=self.device)]
        return order

    def _advance(self, seq: Sequence, token: int, logprob: float, alts) -> bool:
        """Append ``token`` to ``seq``, update its text, emit the delta; True when the row is finished."""
        seq.token_ids.append(token)
        seq.logprobs.append(logprob)
        params, reason = seq.params, None
        if token in self.eos:
            reason = "stop"
        else:
            before = len(seq.text)
            text = self._text(seq)
            longest = max((len(s) for s in params.stop), default=0)
            seq.text, hit = cut_at_stop(text, params.stop, max(0, min(before, len(text)) - longest + 1))
            if hit:
                reason = "stop"
            elif len(seq.token_ids) >= params.max_tokens:
                reason = "length"
        end = len(seq.text) if reason else max(seq.sent, len(seq.text) - held_back(seq.text, params.stop))
        delta, seq.sent = seq.text[seq.sent : end], end
        seq.finish_reason = reason
        seq.sink(Delta(token, logprob, delta, alts, reason))
        return reason is not None

    def _uniform(self, seq: Sequence) -> float:
        return float(torch.rand((), generator=seq.generator or self._generator))

    def _text(self, seq: Sequence) -> str:
        """The text of ``seq.token_ids``, decoding only the tokens after the last complete character where the
        tokenizer allows it (``batching.tail_decoder``)."""
        if self._tail_decode is None:
            return self.tokenizer.decode(seq.token_ids, skip_special_tokens=True)
        tail = self._tail_decode(seq.token_ids[seq.decoded :])
        text = seq.decoded_text + tail
        if not tail.endswith("\ufffd"):
            seq.decoded, seq.decoded_text = len(seq.token_ids), text
        return text

    # -- for callers without a thread (tests, scripts) -------------------------------------------------------------
    def run_until_idle(self, max_steps: int = 100_000) -> None:
        """Step until no row is running and none is waiting (only when the thread is not started)."""
        for _ in range(max_steps):
            if not self.step():
                return
