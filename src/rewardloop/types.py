"""The experience contract passed between collect → estimate → update, and the per-algorithm batches.

``B`` sequences, ``P`` prompt tokens (left-padded), ``R`` response tokens (right-padded). A ``Rollout`` is plain data:
it can be moved between devices, concatenated, filtered, and saved in one process and loaded in another (a Ray
rollout worker, a serving process), so nothing downstream reaches into a trainer's state.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

Message = dict[str, str]  # {"role": "user" | "assistant" | "system", "content": str}
Observation = str | list[Message]  # what an environment shows the policy: prompt text or chat messages
_PER_ROW = ("prompts", "responses", "rows", "turns", "infos")  # lists with one entry per sequence


@dataclass
class Rollout:
    """A batch of generated episodes (the output of the generation engine, plus rewards once scored).

    Always set by generation:
      prompt_ids [B, P] left-padded · prompt_mask [B, P] · response_ids [B, R] right-padded (pad after EOS/stop) ·
      response_mask [B, R] 1 on every real response token (up to and including EOS / the token that completed a
      stop string; in multi-turn episodes also the environment's tokens between turns) ·
      logprobs [B, R] log π_old(a_t | s_t) at sampling time (temperature applied, top-k/top-p truncation not) ·
      finished [B] bool: ended on EOS or a stop string (False = truncated at max_new_tokens) ·
      prompts / responses: the texts (stop string removed).
    Set by collect / scoring (None until then):
      group_ids [B] long: samples drawn for the same prompt or environment seed share an id; every group-relative
        estimator groups by it, never by row order ·
      rewards [B] the weighted reward per sequence · valid [B] bool: False where a reward failed and the sample is
        skipped · components {name: [B]} each reward term before weighting · reward_errors: one dict per failure
        {"reward", "index", "prompt", "completion", "error"} (``index`` is the row in this batch) ·
      rows: the source dataset row of each sample (its columns reach the reward functions).
    Environments (multi-turn) add:
      action_mask [B, R] 1 only on tokens the policy generated (None = ``response_mask``) · token_rewards [B, R]
      each turn's reward on that turn's last action token · turns: the actions' texts per episode · infos: the
      environment's info dict per step per episode.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    logprobs: torch.Tensor
    finished: torch.Tensor
    prompts: list[Any]
    responses: list[str]
    group_ids: torch.Tensor | None = None
    rewards: torch.Tensor | None = None
    valid: torch.Tensor | None = None
    components: dict[str, torch.Tensor] = field(default_factory=dict)
    reward_errors: list[dict[str, Any]] = field(default_factory=list)
    rows: list[dict[str, Any]] | None = None
    action_mask: torch.Tensor | None = None
    token_rewards: torch.Tensor | None = None
    turns: list[list[str]] | None = None
    infos: list[list[dict]] | None = None

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
        """[B] number of response tokens per sequence."""
        return self.response_mask.sum(1)

    @property
    def policy_mask(self) -> torch.Tensor:
        """[B, R] the tokens the policy chose (``action_mask`` when set, else ``response_mask``)."""
        return self.action_mask if self.action_mask is not None else self.response_mask

    @property
    def valid_mask(self) -> torch.Tensor:
        """[B] bool: ``valid``, or all True before scoring."""
        if self.valid is not None:
            return self.valid.bool()
        return torch.ones(len(self), dtype=torch.bool, device=self.prompt_ids.device)

    def __len__(self) -> int:
        return self.prompt_ids.shape[0]

    def to(self, device: torch.device | str) -> Rollout:
        """Every tensor (components included) on ``device``."""
        out = self._map(lambda t: t.to(device))
        out.components = {k: v.to(device) for k, v in self.components.items()}
        return out

    def select(self, index: torch.Tensor | list[int]) -> Rollout:
        """Rows ``index`` of every per-row field; reward errors of dropped rows go, the others are re-indexed."""
        idx = torch.as_tensor(index, dtype=torch.long).cpu()
        ids = idx.tolist()

        def pick(value: Any) -> Any:
            if isinstance(value, torch.Tensor):
                return value[idx.to(value.device)]
            return [value[i] for i in ids]

        out = self._map(pick, lists=True)
        out.components = {k: pick(v) for k, v in self.components.items()}
        new_index = {old: new for new, old in enumerate(ids)}
        out.reward_errors = [
            e | {"index": new_index[e["index"]]} for e in self.reward_errors if e["index"] in new_index
        ]
        return out

    def _map(self, fn, lists: bool = False) -> Rollout:
        changes = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor) or (lists and f.name in _PER_ROW and value is not None):
                changes[f.name] = fn(value)
        return replace(self, **changes)

    @staticmethod
    def concat(parts: list[Rollout], pad_id: int) -> Rollout:
        """One Rollout from several (re-padding prompts on the left and responses on the right); keeps every field.

        Optional fields must be set in all parts or in none; group ids are kept as they are (give each collect call
        its own ``group_start`` so groups from different calls stay apart)."""
        if len(parts) == 1:
            return parts[0]
        P = max(p.prompt_ids.shape[1] for p in parts)
        R = max(p.response_ids.shape[1] for p in parts)

        def left(name: str, value) -> torch.Tensor:
            ts = [getattr(p, name) for p in parts]
            return torch.cat([torch.nn.functional.pad(t, (P - t.shape[1], 0), value=value) for t in ts])

        def right(name: str, value) -> torch.Tensor | None:
            ts = _all_or_none(parts, name)
            return (
                None
                if ts is None
                else torch.cat([torch.nn.functional.pad(t, (0, R - t.shape[1]), value=value) for t in ts])
            )

        def rows(name: str) -> Any:
            values = _all_or_none(parts, name)
            if values is None:
                return None
            return torch.cat(values) if isinstance(values[0], torch.Tensor) else [x for v in values for x in v]

        keys = [set(p.components) for p in parts]
        if any(k != keys[0] for k in keys):
            raise ValueError(f"Rollout.concat: parts have different reward components {[sorted(k) for k in keys]}")
        offsets = [0]
        for p in parts[:-1]:
            offsets.append(offsets[-1] + len(p))
        return Rollout(
            prompt_ids=left("prompt_ids", pad_id),
            prompt_mask=left("prompt_mask", 0),
            response_ids=right("response_ids", pad_id),
            response_mask=right("response_mask", 0),
            logprobs=right("logprobs", 0.0),
            finished=rows("finished"),
            prompts=rows("prompts"),
            responses=rows("responses"),
            group_ids=rows("group_ids"),
            rewards=rows("rewards"),
            valid=rows("valid"),
            components={k: torch.cat([p.components[k] for p in parts]) for k in keys[0]},
            reward_errors=[
                e | {"index": e["index"] + o} for p, o in zip(parts, offsets, strict=True) for e in p.reward_errors
            ],
            rows=rows("rows"),
            action_mask=right("action_mask", 0),
            token_rewards=right("token_rewards", 0.0),
            turns=rows("turns"),
            infos=rows("infos"),
        )

    # -- crossing processes -----------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write the batch to ``path`` (tensors on CPU; rows, infos and errors must be plain data: str, numbers,
        lists, dicts), so another process can ``Rollout.load`` it."""
        data = {f.name: getattr(self.to("cpu"), f.name) for f in fields(self)}
        torch.save({"format": "rewardloop.Rollout/1", **data}, path)

    @staticmethod
    def load(path: str | Path, device: torch.device | str = "cpu") -> Rollout:
        """A Rollout written by ``save`` (loaded with ``weights_only``: no code runs from the file)."""
        data = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(data, dict) or data.pop("format", None) != "rewardloop.Rollout/1":
            raise ValueError(f"{path}: not a Rollout written by Rollout.save")
        return Rollout(**data).to(device)


def _all_or_none(parts: list[Rollout], name: str) -> list | None:
    values = [getattr(p, name) for p in parts]
    if all(v is None for v in values):
        return None
    if any(v is None for v in values):
        raise ValueError(f"Rollout.concat: {name!r} is set in some parts and not in others")
    return values


# ---------------------------------------------------------------------------------------------------------------
# Estimates: what estimate() hands to update(). Shapes [B, R] unless noted.
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class PGBatch:
    """Critic-free policy gradient (GRPO family): mask = policy tokens of valid samples; adv per token;
    old_logp π_old; ref_logp π_ref (None without a reference); kl = k1(π_old ‖ π_ref) (zeros without one)."""

    old_logp: torch.Tensor
    ref_logp: torch.Tensor | None
    mask: torch.Tensor
    adv: torch.Tensor
    kl: torch.Tensor


@dataclass
class PPOBatch:
    """Actor-critic PPO: score [B] processed sequence score; kl = β-free per-token KL estimate to π_ref; rewards the
    KL-shaped per-token rewards; adv (whitened when configured) and adv_raw; returns; old_values V_φold."""

    old_logp: torch.Tensor
    old_values: torch.Tensor
    ref_logp: torch.Tensor
    mask: torch.Tensor
    score: torch.Tensor
    kl: torch.Tensor
    rewards: torch.Tensor
    adv: torch.Tensor
    adv_raw: torch.Tensor
    returns: torch.Tensor


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
