"""Text rows → token ids with loss labels, and right-padded batches: what SFT and DPO both train on.

A row is ``{"prompt", "completion"}`` (loss on the completion only, prompt labels ``IGNORE``) or ``{"text"}`` (loss
on every token); the completion ends with EOS. ``IGNORE`` is the label transformers' loss skips.
"""

from __future__ import annotations

from typing import Any

import torch

IGNORE = -100


def tokenize_row(
    tokenizer, row: dict[str, Any], max_length: int, truncate: bool = False
) -> tuple[list[int], list[int]]:
    """(input_ids, labels) for one row: prompt tokens labelled −100; the completion ends with EOS. A row longer than
    ``max_length`` is an error, or with ``truncate`` cut to its first ``max_length`` tokens."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    if "text" in row and "prompt" not in row:
        ids = tokenizer(row["text"], add_special_tokens=True)["input_ids"] + eos
        labels = list(ids)
    else:
        prompt = tokenizer(row["prompt"], add_special_tokens=True)["input_ids"]
        completion = tokenizer(row["completion"], add_special_tokens=False)["input_ids"] + eos
        ids, labels = prompt + completion, [IGNORE] * len(prompt) + completion
    if len(ids) > max_length and truncate:
        ids, labels = ids[:max_length], labels[:max_length]
    if len(ids) > max_length:
        raise ValueError(f"row is {len(ids)} tokens, longer than model.max_length={max_length}: {str(row)[:120]}")
    return ids, labels


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int, device) -> dict[str, torch.Tensor]:
    """Right-pad to [B, L]: input_ids, attention_mask, labels."""
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, (ids, lab) in enumerate(examples):
        input_ids[i, : len(ids)], labels[i, : len(lab)], mask[i, : len(ids)] = torch.tensor(ids), torch.tensor(lab), 1
    return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}
