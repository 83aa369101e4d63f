"""Batch containers passed between collect → estimate → update. Shapes in the docstrings.

``B`` sequences, ``P`` prompt tokens (left-padded), ``R`` response tokens (right-padded).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch


@dataclass
class Rollout:
    """A batch of generated episodes (the output of the generation engine, plus rewards once scored).

    prompt_ids [B, P] left-padded · prompt_mask [B, P] · response_ids [B, R] right-padded (pad after EOS/stop) ·
    response_mask [B, R] 1 for generated tokens up to and including EOS / the token that completed a stop string ·
    logprobs [B, R] log π_old(a_t | s_t) at sampling time (temperature applied, top-k/top-p truncation not) ·
    finished [B] bool: ended on EOS or a stop string (False = truncated at max_new_tokens) ·
    rewards [B] scalar reward per sequence (after scoring) · prompts/responses: the texts (stop string removed).
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    logprobs: torch.Tensor
    finished: torch.Tensor
    prompts: list[str]
    responses: list[str]
    rewards: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def input_ids(self) -> torch.Tensor:
        """[B, P+R] prompt and response ids."""
        return torch.cat([self.prompt_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        """[B, P+R] 1 for real tokens (prompt tokens and response tokens up to EOS)."""
        return torch.cat([self.prompt_mask, self.response_mask], dim=1)

    @property
    def response_lengths(self) -> torch.Tensor:
        """[B] number of generated tokens per sequence."""
        return self.response_mask.sum(1)

    def __len__(self) -> int:
        return self.prompt_ids.shape[0]

    def to(self, device: torch.device | str) -> Rollout:
        return self._map(lambda t: t.to(device))

    def select(self, index: torch.Tensor | list[int]) -> Rollout:
        """Rows ``index`` of every tensor, list and per-row extra."""
        idx = torch.as_tensor(index, dtype=torch.long)
        ids = idx.tolist()

        def pick(value: Any) -> Any:
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == len(self):
                return value[idx.to(value.device)]
            if isinstance(value, list) and len(value) == len(self):
                return [value[i] for i in ids]
            return value

        out = self._map(pick, lists=True)
        out.extras = {k: pick(v) for k, v in self.extras.items()}
        return out

    def _map(self, fn, lists: bool = False) -> Rollout:
        changes = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor) or (lists and isinstance(value, list)):
                changes[f.name] = fn(value)
        return replace(self, **changes)


def pad_right(seqs: list[torch.Tensor], value: int | float) -> torch.Tensor:
    """Stack 1-D tensors of different lengths into [B, max_len], padding on the right."""
    return torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=value)


def pad_left(seqs: list[list[int]], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id lists → (ids [B, L], mask [B, L]) padded on the left, as decoder-only generation needs."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), value, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[i, width - len(s) :] = 1
    return ids, mask
