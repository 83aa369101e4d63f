"""Scalar heads on a causal-LM trunk: the PPO critic V(s_t) and the Bradley–Terry reward model r(x, y).

``ValueModel`` = a transformer trunk (hidden states h_t) + a bias-free linear head h_t → w·h_t, as in Hugging Face's
``...ForSequenceClassification`` (``score``) and OpenRLHF's critic. The critic reads the head at every position; the
reward model reads it at the *last real token* of each sequence, found from the attention mask — never by searching
for the pad id, which is wrong when pad == eos (a classic bug in ``...ForSequenceClassification`` pooling). With
``shared=True`` the trunk is the policy's own (PPO's "value head on the policy trunk"); otherwise it is a separate
copy (InstructGPT's separate value model).

On disk a ValueModel directory IS a Hugging Face sequence-classification checkpoint:
``AutoModelForSequenceClassification.from_pretrained(dir)`` loads it with our head as ``score.weight``
(``num_labels=1``). rewardloop's metadata — kind and reward normalisation statistics — is the ``rewardloop`` entry
of config.json. ``load_value_model`` also reads any such checkpoint written by plain transformers (TRL's
RewardTrainer) and the older layout (causal LM + ``value_head.safetensors`` + ``value_head.json``).
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import save_torch_state_dict
from safetensors.torch import load_file
from torch import nn
from torch.nn.modules.module import _IncompatibleKeys
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES

from rewardloop.models.loading import check_model_path, load_tokenizer, resolve_device
from rewardloop.ops import position_ids_from_mask

log = logging.getLogger(__name__)
HEAD_KEY = "score.weight"  # the head's name in every HF decoder ...ForSequenceClassification
LEGACY_HEAD_FILE, LEGACY_META_FILE = "value_head.safetensors", "value_head.json"


def trunk_of(lm: nn.Module) -> nn.Module:
    """The transformer body (no LM head) of a causal LM or a bare trunk, looking through a peft wrapper."""
    inner = lm.get_base_model() if hasattr(lm, "peft_config") else lm
    return inner.base_model


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last 1 in each row of ``attention_mask`` [B, L] → [B]; works for left and right padding."""
    L = attention_mask.shape[1]
    return L - 1 - attention_mask.long().flip(1).argmax(1)


class ValueModel(nn.Module):
    """Transformer trunk + bias-free linear scalar head. ``kind``: 'value' (critic) or 'reward' (reward model).

    ``lm`` is a causal LM (the policy or a copy of it) or a bare trunk (``AutoModel``); either way its
    ``base_model`` is the trunk. ``stats`` holds the reward normalisation statistics {"mean", "std"} over training
    responses (reward models).
    """

    def __init__(self, lm: nn.Module, *, kind: str = "value", shared: bool = False, stats: dict | None = None):
        super().__init__()
        self.lm = lm
        self.kind, self.shared, self.stats = kind, shared, dict(stats or {})
        hidden = lm.config.hidden_size
        self.value_head = nn.Linear(hidden, 1, bias=False)  # saved as HF's `score.weight`
        nn.init.normal_(self.value_head.weight, std=1.0 / (hidden + 1) ** 0.5)  # as in TRL's ValueHead init
        self.value_head.to(next(lm.parameters()).device)

    @property
    def config(self):
        return self.lm.config

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
        """Write a HF sequence-classification checkpoint: config.json + safetensors (trunk + ``score.weight``).

        A LoRA trunk is saved merged (the format has no adapters).
        """
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        lm = copy.deepcopy(self.lm).merge_and_unload() if hasattr(self.lm, "peft_config") else self.lm
        trunk = trunk_of(lm)
        weights = {f"{trunk.base_model_prefix}.{k}": v for k, v in trunk.state_dict().items()}
        weights[HEAD_KEY] = self.value_head.weight.detach()
        save_torch_state_dict(weights, path)
        self._hf_config(trunk).save_pretrained(path)

    def _hf_config(self, trunk: nn.Module):
        """The trunk's config turned into its ``...ForSequenceClassification`` config, with our metadata."""
        config = copy.deepcopy(trunk.config)
        arch = MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES.get(config.model_type)
        if arch is None:
            raise ValueError(f"transformers has no sequence-classification class for model_type={config.model_type!r}")
        config.architectures, config.num_labels = [arch], 1
        if config.pad_token_id is None:  # HF's pooling needs one; ours reads the attention mask instead
            eos = config.eos_token_id
            config.pad_token_id = eos[0] if isinstance(eos, list) else eos
        config.dtype = next(trunk.parameters()).dtype
        config.rewardloop = {"kind": self.kind, "stats": self.stats}
        return config

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Accept the on-disk layout: ``score.weight`` for the head, ``<prefix>.*`` for the trunk."""
        trunk = trunk_of(self.lm)
        prefix = trunk.base_model_prefix + "."
        body = {k.removeprefix(prefix): v for k, v in state_dict.items() if k.startswith(prefix)}
        unexpected = [k for k in state_dict if k != HEAD_KEY and not k.startswith(prefix)]
        res = trunk.load_state_dict(body, strict=False, assign=assign)
        missing = [prefix + k for k in res.missing_keys]
        unexpected += [prefix + k for k in res.unexpected_keys]
        if HEAD_KEY in state_dict:
            self.value_head.weight.data.copy_(state_dict[HEAD_KEY])
        else:
            missing.append(HEAD_KEY)
        if strict and (missing or unexpected):
            raise RuntimeError(f"ValueModel.load_state_dict: missing {missing[:5]}, unexpected {unexpected[:5]}")
        return _IncompatibleKeys(missing, unexpected)


def value_model_from_policy(policy: nn.Module, *, shared: bool) -> ValueModel:
    """A critic for ``policy``: a head on its own trunk (``shared``) or on a deep copy of it (separate critic)."""
    lm = policy if shared else copy.deepcopy(policy)
    return ValueModel(lm, kind="value", shared=shared)


def load_value_model(path: str | Path, device: str | torch.device = "auto") -> tuple[ValueModel, Any]:
    """(ValueModel, tokenizer) from a HF sequence-classification checkpoint with ``num_labels=1`` + a tokenizer.

    Reads what ``ValueModel.save_pretrained`` writes, any such checkpoint from plain transformers (TRL's
    RewardTrainer: its ``score`` becomes our head, no statistics) and the older ``value_head.safetensors`` layout.
    """
    check_model_path(str(path), "reward/value model path")
    if Path(path).is_dir() and not (Path(path) / "config.json").exists():
        raise FileNotFoundError(f"{path}: no config.json; not a reward/value model directory")
    dev = resolve_device(device) if isinstance(device, str) else device
    config = AutoConfig.from_pretrained(path)
    meta = getattr(config, "rewardloop", None) or {"kind": "reward"}
    if (Path(path) / LEGACY_HEAD_FILE).exists():
        trunk, head = AutoModel.from_pretrained(path), load_file(Path(path) / LEGACY_HEAD_FILE)
        meta_file = Path(path) / LEGACY_META_FILE
        meta = json.loads(meta_file.read_text()) if meta_file.exists() else {"kind": "value"}
        weight, bias = head["value_head.weight"], head.get("value_head.bias")
    else:
        archs, n = config.architectures or [], config.num_labels
        if n != 1 or not any(a.endswith("ForSequenceClassification") for a in archs):
            raise ValueError(
                f"{path}: not a reward/value model — expected a Hugging Face sequence-classification checkpoint with "
                f"num_labels=1 (config.json has architectures={archs}, num_labels={n})"
            )
        cls = AutoModelForSequenceClassification.from_pretrained(path)
        trunk, weight, bias = cls.base_model, cls.score.weight, cls.score.bias
    model = ValueModel(trunk.to(dev), kind=meta.get("kind", "reward"), stats=meta.get("stats"))
    model.value_head.weight.data.copy_(weight)
    if bias is not None and float(bias.abs().max()) > 0:
        _drop_bias(model, float(bias.reshape(-1)[0]), path)
    from rewardloop.config import ModelConfig

    return model.eval(), load_tokenizer(ModelConfig(path=str(path)))


def _drop_bias(model: ValueModel, bias: float, path: str | Path) -> None:
    """Our head has no bias: fold a saved one into the mean so normalised scores (r − μ)/σ are unchanged."""
    if "mean" in model.stats:
        model.stats["mean"] -= bias
    log.warning("%s: the head's bias %.4g is dropped (raw scores shift by it; normalised scores do not)", path, bias)
