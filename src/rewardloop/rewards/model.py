"""The one reward-model scorer: a reward model (or an ensemble of them) as a reward function.

A reward model is any directory ``models.value_head.load_value_model`` reads: one written by ``rewardloop reward``
or any Hugging Face ``AutoModelForSequenceClassification`` with ``num_labels=1`` (e.g. TRL's RewardTrainer output).
Texts are encoded exactly as the reward model was trained on them (``encode_texts``: the prompt with the
tokenizer's special tokens, then the response), and the score is read at the last real token. Each member's score
is normalised by the statistics saved with it, (r − μ) / σ, when it has them; an ensemble scores
mean − λ·std over its members (uncertainty penalty, Coste et al. 2024).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from rewardloop.chat import render, text_of

ENSEMBLE_FILE = "ensemble.json"


def encode_texts(tokenizer, prompts: list[str], responses: list[str], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (ids [B, L], mask [B, L]) of prompt (with special tokens) + response, as the policy sees them."""
    p_ids = tokenizer(list(prompts), add_special_tokens=True)["input_ids"]
    r_ids = tokenizer(list(responses), add_special_tokens=False)["input_ids"]
    seqs = [list(p) + list(r) for p, r in zip(p_ids, r_ids, strict=True)]
    width = max(len(s) for s in seqs)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)], mask[i, : len(s)] = torch.tensor(s, dtype=torch.long), 1
    return ids.to(device), mask.to(device)


def score_texts(model, tokenizer, prompts, responses, batch_size: int = 64) -> torch.Tensor:
    """Raw r(x, y) for each pair of texts [B] (no gradients, no normalisation)."""
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for i in range(0, len(prompts), batch_size):
            ids, mask = encode_texts(tokenizer, prompts[i : i + batch_size], responses[i : i + batch_size], device)
            out.append(model.score(ids, mask).float())
    return torch.cat(out) if out else torch.zeros(0)


def member_dirs(paths: str | Path | list[str]) -> list[Path]:
    """Reward-model directories from one dir, an ensemble dir (with ensemble.json) or a list of dirs."""
    dirs: list[Path] = []
    for p in [paths] if isinstance(paths, str | Path) else paths:
        p = Path(p)
        if (p / ENSEMBLE_FILE).exists():
            dirs += [p / m for m in json.loads((p / ENSEMBLE_FILE).read_text())["members"]]
        else:
            dirs.append(p)
    return dirs


class RewardModelScorer:
    """A RewardFn from reward-model directories: ``scorer(prompts=, completions=) -> list[float]``.

    ``path``: one directory, an ensemble directory or a list; ``uncertainty_penalty`` λ; ``normalize`` applies each
    member's saved (μ, σ). ``last_stats`` holds {"mean", "std"} [B] of the last call (ensemble spread, for logs).
    """

    def __init__(
        self,
        path: str | Path | list[str],
        device: str = "auto",
        *,
        uncertainty_penalty: float = 0.0,
        normalize: bool = True,
        batch_size: int = 32,
        members: list[tuple[Any, Any]] | None = None,
    ) -> None:
        from rewardloop.models.value_head import load_value_model

        self.dirs = member_dirs(path)
        self.members = members or [load_value_model(d, device) for d in self.dirs]
        self.penalty, self.normalize, self.batch_size = uncertainty_penalty, normalize, batch_size
        self.last_stats: dict[str, torch.Tensor] = {}
        self.inline = True  # trusted model code: scored in the caller's thread (its torch threads), no deadline
        self.__name__ = f"reward_model[{Path(self.dirs[0]).name if self.dirs else 'in-memory'}]"

    def member_scores(self, prompts: list[Any], completions: list[Any]) -> torch.Tensor:
        """Scores of every member [k, B], each normalised by its own saved statistics when ``normalize``."""
        completions = [text_of(c) for c in completions]
        rows = []
        for model, tok in self.members:
            # A conversational prompt is rendered with this reward model's own chat template, as TRL does.
            texts = [p if isinstance(p, str) else render(tok, p, add_generation_prompt=True) for p in prompts]
            raw = score_texts(model, tok, texts, completions, self.batch_size).cpu()
            stats = getattr(model, "stats", None) or {}
            if self.normalize and stats:
                raw = (raw - stats.get("mean", 0.0)) / (stats.get("std", 1.0) or 1.0)
            rows.append(raw)
        return torch.stack(rows)

    def __call__(self, prompts: list[Any], completions: list[Any], **_: Any) -> list[float]:
        s = self.member_scores(prompts, completions)  # [k, B]
        mean = s.mean(0)
        std = s.std(0, unbiased=True) if s.shape[0] > 1 else torch.zeros_like(mean)
        self.last_stats = {"mean": mean, "std": std}
        return (mean - self.penalty * std).tolist()


_SCORERS: dict[tuple, RewardModelScorer] = {}


def cached_scorer(path: str | Path | list[str], device: str = "auto", **kwargs: Any) -> RewardModelScorer:
    """One loaded scorer per (paths, device, options): a reward model named twice is loaded once."""
    key = (tuple(str(d.resolve()) for d in member_dirs(path)), device, tuple(sorted(kwargs.items())))
    if key not in _SCORERS:
        _SCORERS[key] = RewardModelScorer(path, device, **kwargs)
    return _SCORERS[key]
