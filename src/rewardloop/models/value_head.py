"""Scalar heads on a causal-LM trunk: the PPO critic V(s_t) and the Bradley–Terry reward model r(x, y).

``ValueModel`` = a Hugging Face causal LM (its trunk gives hidden states h_t) + a linear head h_t → scalar.
The critic reads the head at every position; the reward model reads it at the *last real token* of each sequence,
found from the attention mask — never by searching for the pad id, which is wrong when pad == eos (a classic bug in
``...ForSequenceClassification`` heads). With ``shared=True`` the trunk is the policy's own (PPO's "value head on
the policy trunk"); otherwise it is a separate copy (InstructGPT's separate value model).

On disk a ValueModel directory is the backbone as plain ``save_pretrained`` output (``AutoModelForCausalLM`` loads
it) plus ``value_head.safetensors`` (keys ``value_head.weight``/``value_head.bias``) and ``value_head.json``
(kind, reward normalisation statistics).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.modules.module import _IncompatibleKeys
from transformers import AutoModelForCausalLM

from rewardloop.models.loading import load_tokenizer, resolve_device
from rewardloop.rollout.engine import position_ids_from_mask

HEAD_FILE, META_FILE = "value_head.safetensors", "value_head.json"


def trunk_of(lm: nn.Module) -> nn.Module:
    """The transformer body (no LM head) of a causal LM, looking through a peft wrapper."""
    inner = lm.get_base_model() if hasattr(lm, "peft_config") else lm
    return inner.base_model


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last 1 in each row of ``attention_mask`` [B, L] → [B]; works for left and right padding."""
    L = attention_mask.shape[1]
    return L - 1 - attention_mask.long().flip(1).argmax(1)


class ValueModel(nn.Module):
    """Causal-LM trunk + linear scalar head. ``kind``: 'value' (critic) or 'reward' (reward model).

    ``stats`` holds the reward normalisation statistics {"mean", "std"} over training responses (reward models).
    """

    def __init__(self, lm: nn.Module, *, kind: str = "value", shared: bool = False, stats: dict | None = None):
        super().__init__()
        self.lm = lm
        self.kind, self.shared, self.stats = kind, shared, dict(stats or {})
        hidden = lm.config.hidden_size
        self.value_head = nn.Linear(hidden, 1)
        nn.init.normal_(self.value_head.weight, std=1.0 / (hidden + 1) ** 0.5)  # as in TRL's ValueHead init
        nn.init.zeros_(self.value_head.bias)
        self.value_head.to(next(lm.parameters()).device)

    @property
    def config(self):
        return self.lm.config

    @property
    def _tied_weights_keys(self):
        return getattr(self.lm, "_tied_weights_keys", None)

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Final hidden states [B, L, H] (position ids skip left padding, as in the sampler)."""
        positions = position_ids_from_mask(attention_mask)
        out = trunk_of(self.lm)(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions)
        return out.last_hidden_state

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """[..., H] → [...] scalar per position (float32)."""
        return self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1).float()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """V at every position: [B, L] → [B, L]."""
        return self.head(self.hidden_states(input_ids, attention_mask))

    def response_values(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_response: int) -> torch.Tensor:
        """V(s_t) for the states that emit the last ``n_response`` tokens: [B, R] (same slicing as the log-probs)."""
        return self(input_ids, attention_mask)[:, -(n_response + 1) : -1]

    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Scalar per sequence read at its last real token: [B, L] → [B]."""
        values = self(input_ids, attention_mask)  # [B, L]
        idx = last_token_index(attention_mask)
        return values.gather(1, idx[:, None]).squeeze(1)

    # -- persistence (RunDir checkpoints call save_pretrained / load_state_dict through save_model/restore_weights)
    def save_pretrained(self, path: str | Path, safe_serialization: bool = True, **kwargs: Any) -> None:
        path = Path(path)
        self.lm.save_pretrained(path, safe_serialization=True, **kwargs)
        head = {f"value_head.{k}": v.detach().cpu().contiguous() for k, v in self.value_head.state_dict().items()}
        save_file(head, path / HEAD_FILE)
        (path / META_FILE).write_text(json.dumps({"kind": self.kind, "stats": self.stats}, indent=1))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Accept the flat on-disk layout: ``value_head.*`` keys for the head, everything else for the backbone."""
        head = {k.removeprefix("value_head."): v for k, v in state_dict.items() if k.startswith("value_head.")}
        body = {k.removeprefix("lm."): v for k, v in state_dict.items() if not k.startswith("value_head.")}
        res = self.lm.load_state_dict(body, strict=False)
        missing = list(res.missing_keys)
        if head:
            self.value_head.load_state_dict(head)
        else:
            missing += ["value_head.weight", "value_head.bias"]
        if strict and (missing or res.unexpected_keys):
            raise RuntimeError(
                f"ValueModel.load_state_dict: missing {missing[:5]}, unexpected {res.unexpected_keys[:5]}"
            )
        return _IncompatibleKeys(missing, list(res.unexpected_keys))


def value_model_from_policy(policy: nn.Module, *, shared: bool) -> ValueModel:
    """A critic for ``policy``: a head on its own trunk (``shared``) or on a deep copy of it (separate critic)."""
    import copy

    lm = policy if shared else copy.deepcopy(policy)
    return ValueModel(lm, kind="value", shared=shared)


def load_value_model(path: str | Path, device: str | torch.device = "auto") -> tuple[ValueModel, Any]:
    """(ValueModel, tokenizer) from a directory written by ``ValueModel.save_pretrained`` + a tokenizer."""
    path = Path(path)
    if not (path / HEAD_FILE).exists():
        raise FileNotFoundError(f"{path}: no {HEAD_FILE}; not a reward/value model directory written by rewardloop")
    meta = json.loads((path / META_FILE).read_text()) if (path / META_FILE).exists() else {}
    dev = resolve_device(device) if isinstance(device, str) else device
    lm = AutoModelForCausalLM.from_pretrained(path).to(dev)
    model = ValueModel(lm, kind=meta.get("kind", "value"), stats=meta.get("stats"))
    head = load_file(path / HEAD_FILE)
    model.value_head.load_state_dict({k.removeprefix("value_head."): v for k, v in head.items()})
    model.value_head.to(dev)
    from rewardloop.config import ModelConfig

    tok = load_tokenizer(ModelConfig(path=str(path)))
    return model.eval(), tok
