"""Generation engine (batched sampling with KV cache) and teacher-forced scoring."""

from rewardloop.ops import position_ids_from_mask
from rewardloop.rollout.engine import encode_prompts, eos_token_ids, generate, sample_next
from rewardloop.rollout.scoring import batched_logprobs, response_logits, sequence_logprobs

__all__ = [
    "batched_logprobs",
    "encode_prompts",
    "eos_token_ids",
    "generate",
    "position_ids_from_mask",
    "response_logits",
    "sample_next",
    "sequence_logprobs",
]
