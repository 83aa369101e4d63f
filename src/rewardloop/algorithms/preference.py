"""What the offline preference learners (DPO on pairs, KTO on thumbs) share: sequence log-probs of prompt +
completion, reference log-probs computed once with the starting model, the cached data a resumed run reuses,
held-out averages, and the ``reviews`` gold evaluation (win rate over the starting model's samples).

Each learner encodes one training example as a tuple of K token sequences — DPO: (prompt+chosen, prompt+rejected);
KTO: (prompt+completion, prompt+another row's completion) — and gets its reference log-probs as an [N, K] tensor.
The training loops stay in ``dpo.py`` and ``kto.py``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

from rewardloop.config import GenerationConfig
from rewardloop.data.tokenize import IGNORE, collate
from rewardloop.ops import logprobs_from_logits
from rewardloop.rollout import generate
from rewardloop.runs import RunDir

Seq = tuple[list[int], list[int]]  # (input_ids, labels) of one prompt + completion; prompt labels IGNORE
Example = tuple[Seq, ...]  # the K sequences of one training example


def completion_logps(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Σ_t log π(y_t | x, y_<t) over labelled (completion) tokens of a right-padded batch: [B]."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]  # [B, L-1, V]
    labels = batch["labels"][:, 1:]  # position j predicts token j+1
    mask = labels != IGNORE
    logp = logprobs_from_logits(logits, labels.clamp(min=0))  # [B, L-1]
    return (logp * mask).sum(1)


def sequence_logps(model, seqs: Sequence[Seq], pad_id: int, device) -> torch.Tensor:
    """Completion log-probs of ``seqs`` from one forward over one right-padded batch: [N]."""
    return completion_logps(model, collate(list(seqs), pad_id, device))


def example_logps(model, examples: Sequence[Example], pad_id: int, device) -> torch.Tensor:
    """Log-probs of every sequence of every example, one forward over the K·B sequences: [B, K]."""
    k = len(examples[0])
    logps = sequence_logps(model, [ex[j] for j in range(k) for ex in examples], pad_id, device)  # [K·B], j-major
    return logps.view(k, len(examples)).T


@torch.no_grad()
def reference_logps(model, examples: Sequence[Example], pad_id: int, device, batch_size: int = 64) -> torch.Tensor:
    """π_ref log-probs of every sequence of every example, computed once with the starting model: [N, K] (CPU)."""
    model.eval()
    parts = [
        example_logps(model, examples[i : i + batch_size], pad_id, device) for i in range(0, len(examples), batch_size)
    ]
    return torch.cat(parts).cpu()


def sample_texts(model, tokenizer, prompts: list[str], gen: GenerationConfig, seed: int, batch_size: int = 64):
    """One sampled completion per prompt (seeded, so two models can be compared on the same randomness)."""
    was_training = model.training
    model.eval()
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    texts = []
    for i in range(0, len(prompts), batch_size):
        texts += generate(model, tokenizer, prompts[i : i + batch_size], gen, generator=generator).responses
    model.train(was_training)
    return texts


def offline_data(
    run: RunDir,
    resume: bool,
    files: tuple[str, str],
    make_rows: Callable[[], tuple[list[dict], list[dict]]],
    encode: Callable[[list[dict]], list[Example]],
    reference: Callable[[list[Example]], torch.Tensor],
    baseline: Callable[[], list[str]],
) -> tuple[dict[str, Any], list[Example], list[Example]]:
    """(data, encoded train examples, encoded held-out examples), made once with the starting model (= π_ref).

    ``data`` = {"train", "test": rows, "ref_train" [N, K], "ref_test" [M, K], "baseline": the starting model's eval
    samples}; saved to ``files[0]`` (e.g. dpo_data.pt) in the run directory, atomically, and reused by ``--resume``,
    so the reference is never recomputed from a partly trained policy. The training rows are written to ``files[1]``.
    """
    cache = run.path / files[0]
    if resume and cache.exists():
        data = torch.load(cache, weights_only=False)
        return data, encode(data["train"]), encode(data["test"])
    train_rows, test_rows = make_rows()
    enc_train, enc_test = encode(train_rows), encode(test_rows)
    data = {
        "train": train_rows,
        "test": test_rows,
        "ref_train": reference(enc_train),
        "ref_test": reference(enc_test),
        "baseline": baseline(),
    }
    tmp = cache.with_suffix(".tmp")
    torch.save(data, tmp)
    os.replace(tmp, cache)
    with open(run.path / files[1], "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in train_rows)
    return data, enc_train, enc_test


@torch.no_grad()
def heldout_average(
    step: Callable[[slice], tuple[torch.Tensor, dict[str, float]]],
    model,
    n: int,
    keys: tuple[str, ...],
    batch_size: int = 64,
) -> dict[str, float]:
    """``step(rows)`` → (loss, metrics) on the held-out batches ``rows`` = slice(i, i + batch_size) of ``n``, in eval
    mode; {"eval/loss", "eval/<key>"}: the mean over batches weighted by their size (a key a batch lacks, e.g. a
    KTO batch with no undesirable row, is averaged over the batches that have it)."""
    was_training = model.training
    model.eval()
    parts = []
    for i in range(0, n, batch_size):
        loss, metrics = step(slice(i, i + batch_size))
        parts.append((min(batch_size, n - i), {"loss": loss.item(), **metrics}))
    model.train(was_training)
    out = {}
    for k in ("loss", *keys):
        have = [(w, m[k]) for w, m in parts if k in m]
        if have:
            out[f"eval/{k}"] = sum(w * v for w, v in have) / sum(w for w, _ in have)
    return out


def gold_metrics(
    model, tokenizer, prompts: list[str], gen: GenerationConfig, seed: int, baseline: list[str], reward_fn
) -> dict[str, float]:
    """``reviews``: the policy samples ``prompts`` with the seed the starting model's ``baseline`` was drawn with;
    eval/win_rate = the gold (noiseless) annotator's win rate over the baseline (0.5 for the starting model itself),
    eval/gold_reward = mean gold reward of the samples."""
    from rewardloop.envs.reviews import SimulatedAnnotator, gold_win_rate

    texts = sample_texts(model, tokenizer, prompts, gen, seed)
    return {
        "eval/win_rate": gold_win_rate(SimulatedAnnotator(0.0), prompts, texts, baseline),
        "eval/gold_reward": sum(reward_fn(prompts, texts)) / len(texts),
    }
