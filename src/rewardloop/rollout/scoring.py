"""Teacher-forced scoring of (prompt, response) batches: log-probs and entropies of response tokens.

Shared by every algorithm (PPO/GRPO old/reference log-probs, DPO, SFT evaluation) so all of them agree with the
sampler: the same position ids for left padding and the same temperature scaling.
"""

from __future__ import annotations

import torch

from rewardloop.ops import entropy_from_logits, logprobs_from_logits, position_ids_from_mask


def response_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_response: int) -> torch.Tensor:
    """Logits that predict the last ``n_response`` tokens: input [B, L] → [B, R, V]."""
    positions = position_ids_from_mask(attention_mask)
    kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=False)
    try:
        logits = model(**kwargs, logits_to_keep=n_response + 1).logits
    except TypeError:
        logits = model(**kwargs).logits
    return logits[:, -(n_response + 1) : -1]  # position j predicts token j+1


def sequence_logprobs(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    n_response: int,
    temperature: float = 1.0,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log π(a_t | s_t) for the last ``n_response`` tokens [B, R] (and entropy [B, R] when asked)."""
    logits = response_logits(model, input_ids, attention_mask, n_response)  # [B, R, V]
    if temperature not in (0.0, 1.0):
        logits = logits / temperature
    targets = input_ids[:, -n_response:]  # [B, R]
    logp = logprobs_from_logits(logits, targets)
    return logp, (entropy_from_logits(logits) if with_entropy else None)


@torch.no_grad()
def batched_logprobs(model, input_ids, attention_mask, n_response: int, temperature: float = 1.0, batch_size: int = 64):
    """``sequence_logprobs`` without gradients, in chunks of ``batch_size`` rows: [B, R]."""
    chunks = []
    for i in range(0, input_ids.shape[0], batch_size):
        lp, _ = sequence_logprobs(
            model, input_ids[i : i + batch_size], attention_mask[i : i + batch_size], n_response, temperature
        )
        chunks.append(lp)
    return torch.cat(chunks, 0)
