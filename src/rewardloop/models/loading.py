"""Load any Hugging Face causal LM (hub name or local path) or build a tiny preset; save with safetensors.

Everything saved here reloads with plain ``transformers``: ``AutoModelForCausalLM.from_pretrained(dir)`` and
``AutoTokenizer.from_pretrained(dir)``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from rewardloop.config import ConfigError, LoraConfig, ModelConfig
from rewardloop.models.presets import preset_config
from rewardloop.models.tokenizer import build_tokenizer

log = logging.getLogger(__name__)
transformers.utils.logging.disable_progress_bar()  # no "Writing model shards" bars inside our own progress bar
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    """The device ``model.device`` names, probed rather than assumed: 'auto' → CUDA, then Apple MPS, then CPU; an
    explicit 'cuda[:i]' / 'mps' that this machine cannot run is a ValueError saying so (not a crash inside torch)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"model.device={name!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"model.device={name!r} but CUDA is not available (torch {torch.__version__}); use model.device=auto or cpu"
        )
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"model.device={name!r} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not _mps_available():
        raise ValueError(f"model.device={name!r} but Apple MPS is not available; use model.device=auto or cpu")
    return device


def check_precision(cfg: ModelConfig, device: torch.device) -> None:
    """Precision the device can train in: a clear error here instead of a failure deep inside torch.

    CPU: float32 and bfloat16 weights, bf16 autocast (emulated where the CPU has no bf16 units: slower, correct);
    float16 weights are refused (CPU kernels miss ops and there is no loss scaling). CUDA: bfloat16 (weights or
    autocast) needs a GPU that supports it (Ampere or newer)."""
    wants_bf16 = cfg.dtype == "bfloat16" or cfg.autocast == "bfloat16"
    if device.type == "cpu" and cfg.dtype == "float16":
        raise ValueError("model.dtype=float16 cannot train on CPU (missing fp16 kernels, no loss scaling); use "
                         "bfloat16 or float32")  # fmt: skip
    if device.type == "cuda" and wants_bf16 and not torch.cuda.is_bf16_supported():
        raise ValueError(
            f"bfloat16 (model.dtype={cfg.dtype}, model.autocast={cfg.autocast}) is not supported on "
            f"{torch.cuda.get_device_name(device)}; use model.dtype=float32 and model.autocast=off"
        )
    if device.type == "mps" and cfg.autocast == "bfloat16":
        raise ValueError("model.autocast=bfloat16 is not supported on Apple MPS; use model.autocast=off")


def check_model_path(path: str, key: str = "model.path") -> None:
    """A name that can only be a local directory (``./x``, ``/x``, ``a/b/c``) must exist: say so plainly instead of
    letting the hub client reject it as a malformed repo id. Hub names (``org/name``) pass through."""
    looks_local = path.startswith((".", "/", "~")) or path.count("/") > 1 or (os.sep != "/" and os.sep in path)
    if looks_local and not Path(path).expanduser().exists():
        raise FileNotFoundError(f"{key}={path!r}: no such local directory (a hub model is named 'org/name')")


WEIGHT_FILES = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json", "*.h5", "*.msgpack")


def check_model_dir(path: str, key: str = "model.path") -> None:
    """A local ``path`` must be a model directory: config.json (or a LoRA adapter's adapter_config.json) and weights.
    A file, or a directory without them, is a ``ConfigError`` naming ``key`` and the path (hub names pass)."""
    local = Path(path).expanduser()
    if not local.exists():
        return
    if not local.is_dir():
        raise ConfigError(
            f"{key}={path!r} is a file, not a model directory (save_pretrained's config.json + weights) or hub name"
        )
    if not (local / "config.json").exists() and not (local / "adapter_config.json").exists():
        raise ConfigError(f"{key}={path!r}: the directory has no config.json; it is not a saved model")
    if not any(next(local.glob(pattern), None) for pattern in WEIGHT_FILES):
        raise ConfigError(
            f"{key}={path!r}: the directory holds no model weights (model.safetensors, pytorch_model.bin or "
            "adapter_model.safetensors)"
        )


def from_pretrained(load, source: str, key: str, **kwargs):
    """``load(source, **kwargs)`` (a transformers ``from_pretrained``) with its OSErrors told plainly: a name that is
    no local directory and cannot be fetched from the hub (offline, not cached, misspelt) names ``key`` and says so."""
    try:
        return load(source, **kwargs)
    except OSError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if Path(source).expanduser().exists():
            raise ConfigError(f"{key}={source!r}: cannot load the model directory: {first}") from None
        from huggingface_hub import constants

        offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
        why = "offline (HF_HUB_OFFLINE=1) and not in the local cache" if offline else "not found or not reachable"
        raise FileNotFoundError(
            f"{key}={source!r}: no local directory of that name exists, and the hub model is {why} ({first})"
        ) from None


def check_max_length(model: PreTrainedModel, cfg: ModelConfig) -> None:
    """``cfg.max_length`` must fit the model's positions (``max_position_embeddings`` / ``n_positions``)."""
    for attr in ("max_position_embeddings", "n_positions"):
        limit = getattr(model.config, attr, None)
        if isinstance(limit, int) and limit > 0:
            if cfg.max_length > limit:
                where = cfg.path or f"preset {cfg.preset}"
                raise ConfigError(
                    f"model.max_length={cfg.max_length} exceeds the model's {attr}={limit} ({where}); "
                    f"set model.max_length to at most {limit}"
                )
            return


def load_tokenizer(cfg: ModelConfig) -> PreTrainedTokenizerBase:
    """The tokenizer for ``cfg``: ``cfg.tokenizer`` or the model's own, else the built-in BPE tokenizer.

    A tokenizer without a pad token gets its EOS as pad (masks, not pad ids, decide what is real everywhere).
    """
    source = cfg.tokenizer or cfg.path
    key = "model.tokenizer" if cfg.tokenizer else "model.path"
    if source is not None:
        check_model_path(source, key)
        if cfg.tokenizer is None and not (Path(source).expanduser() / "tokenizer_config.json").exists():
            check_model_dir(source, key)  # a tokenizer-only directory is fine here; anything else must be a model
        if cfg.tokenizer is None and not (Path(source) / "tokenizer_config.json").exists():
            source = adapter_base(source) or source  # an adapter saved without a tokenizer: the base model's
    if source is None:
        tok = build_tokenizer()
    else:
        tok = from_pretrained(AutoTokenizer.from_pretrained, source, key, trust_remote_code=cfg.trust_remote_code)
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ValueError(f"tokenizer {source!r} has neither a pad nor an eos token; set one before training")
        tok.pad_token = tok.eos_token
    return tok


def load_model(cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase, device: torch.device | None = None):
    """The policy model for ``cfg`` on ``device``: from_pretrained(path) or a freshly initialised preset.

    A ``path`` holding a LoRA adapter (adapter_config.json) loads its base model plus the adapter: kept as
    trainable adapters when ``cfg.lora`` is set, merged into the weights otherwise.
    """
    device = device or resolve_device(cfg.device)
    check_precision(cfg, device)
    dtype = DTYPES[cfg.dtype]
    base = None
    if cfg.path is not None:
        check_model_path(cfg.path)
        check_model_dir(cfg.path)
        base = adapter_base(cfg.path)  # a LoRA adapter directory: its base model first, the adapter below
        model = from_pretrained(
            AutoModelForCausalLM.from_pretrained,
            base or cfg.path,
            f"{cfg.path}: adapter base model" if base else "model.path",
            dtype=dtype,
            trust_remote_code=cfg.trust_remote_code,
        )
        check_max_length(model, cfg)
    else:
        config = preset_config(
            cfg.preset,
            vocab_size=len(tokenizer),
            max_length=cfg.max_length,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if cfg.gradient_checkpointing:
        enable_checkpointing(model)
    if base is not None:
        model = load_adapter(model, cfg.path, trainable=cfg.lora is not None)
    elif cfg.lora is not None:
        model = apply_lora(model, cfg.lora)
    if cfg.disable_dropout:
        disable_dropout(model)
    return model.to(device)


def adapter_base(path: str | Path) -> str | None:
    """The base model named by the LoRA adapter saved in ``path`` (None when ``path`` holds no adapter)."""
    config_file = Path(path) / "adapter_config.json"
    if not config_file.exists():
        return None
    base = json.loads(config_file.read_text()).get("base_model_name_or_path")
    if not base:
        raise ValueError(
            f"{path}: the LoRA adapter names no base model (it was trained on a preset built from a config); "
            "save that run with model.lora.save=merged"
        )
    return base


def load_adapter(model: PreTrainedModel, path: str | Path, trainable: bool):
    """``model`` with the LoRA adapter saved in ``path``: trainable adapters, or merged into plain weights."""
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(model, path, is_trainable=trainable)
    if trainable:
        return peft_model
    return peft_model.merge_and_unload().requires_grad_(True)  # full fine-tuning of the merged weights


def disable_dropout(model: torch.nn.Module) -> None:
    """Every dropout rate → 0: ``nn.Dropout`` modules, float rates that modules read in ``forward`` (Llama's
    ``attention_dropout``) and the config's (``attention_dropout``, ``resid_pdrop``, ...) so a re-saved model keeps it.
    """
    for obj in [*model.modules(), model.config]:
        if isinstance(obj, torch.nn.Dropout):
            obj.p = 0.0
        for name, value in list(vars(obj).items()):
            if isinstance(value, float) and ("dropout" in name or name.endswith("pdrop")):
                setattr(obj, name, 0.0)


def enable_checkpointing(model: PreTrainedModel) -> None:
    """Activation (gradient) checkpointing, non-reentrant; transformers ≥ 5.2x renamed the method."""
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def mixed_precision(cfg: ModelConfig, device: torch.device):
    """The autocast context for ``cfg.autocast`` on ``device`` (a no-op context when off).

    Training loops wrap sampling, scoring and the loss's forward/backward in it; optimizer steps and the log-prob
    maths (``ops.logprobs_from_logits`` upcasts to float32) stay in full precision.
    """
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.autocast == "bfloat16")


# transformers builds a model under process-global switches (meta-device init, patched tensor constructors), so two
# threads loading at once — a server swapping to a promoted version while the loop loads the same weights — can see
# each other's state ("Cannot copy out of meta tensor"). Loads in one process take turns.
_LOADING = threading.RLock()


def load_pretrained(cfg: ModelConfig, device: torch.device | None = None):
    """(model, tokenizer) for ``cfg`` — the usual entry point (thread-safe: loads in one process take turns)."""
    with _LOADING:
        tokenizer = load_tokenizer(cfg)
        return load_model(cfg, tokenizer, device), tokenizer


def apply_lora(model: PreTrainedModel, lora: LoraConfig):
    """Wrap ``model`` with LoRA adapters (``peft``); only the adapters train."""
    try:
        from peft import LoraConfig as PeftLoraConfig
        from peft import get_peft_model
    except ImportError:
        raise ImportError("model.lora needs `peft`: pip install 'rewardloop[lora]'") from None
    peft_cfg = PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_cfg)


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def atomic_dir(target: Path) -> Path:
    """A new temporary directory beside ``target`` (same filesystem), to fill and then ``replace_dir`` onto it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))


def replace_dir(tmp: Path, target: Path) -> None:
    """Move the finished ``tmp`` directory onto ``target`` (the old one stays until the new one is complete)."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def save_model(model, tokenizer: PreTrainedTokenizerBase | None, path: str | Path, lora_save: str = "merged") -> Path:
    """save_pretrained (safetensors) + tokenizer into ``path``, atomically (temp dir + rename).

    A LoRA model is saved merged (plain transformers loads it) or as an adapter (``lora_save='adapter'``).
    """
    target = Path(path)
    tmp = atomic_dir(target)
    try:
        to_save = model
        if hasattr(model, "peft_config") and lora_save == "merged":
            import copy

            to_save = copy.deepcopy(model).merge_and_unload()
        to_save.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
