"""One config system: pydantic models are the source of truth for YAML presets, CLI overrides and docs.

``load_config(Cls, path, ["optim.lr=3e-4", "model.path=/some/dir"])`` reads YAML, applies dotted overrides (values
parsed as YAML scalars) and validates. Unknown keys, wrong types and out-of-range values raise ``ConfigError`` naming
the key, the value and what is allowed.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the file, key, value and what is allowed."""


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class ModelConfig(Section):
    """Which policy model to start from: a hub name / local directory (``path``) or a built-in tiny ``preset``."""

    path: str | None = Field(None, description="HF hub name or local directory; overrides `preset`")
    preset: str = Field("llama-1m", description="tiny architecture built from a config when `path` is unset")
    tokenizer: str | None = Field(None, description="tokenizer path/name; default: the model's, or the built-in one")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    autocast: Literal["off", "bfloat16"] = Field(
        "off",
        description="mixed precision: forward/backward matmuls in bf16 (torch.autocast) while weights, optimizer "
        "state and log-probs stay in `dtype`; 1.3× faster GRPO/PPO steps in the latest docs/benchmarks.md run (CPU with bf16 units)",
    )
    gradient_checkpointing: bool = Field(
        False, description="recompute activations in the backward pass: less memory, ~25% more training compute"
    )
    device: str = Field("auto", description="'auto' (cuda if available, else cpu), 'cpu', 'cuda', 'cuda:1', ...")
    lora: LoraConfig | None = Field(None, description="train LoRA adapters (needs `peft`) instead of all weights")
    disable_dropout: bool = Field(
        True,
        description="set every dropout rate to 0 (modules, config, LoRA's): RL re-scores samples in train mode and "
        "the log-probs must match the sampler's (TRL's disable_dropout); SFT defaults to false",
    )
    trust_remote_code: bool = False
    max_length: int = Field(256, ge=8, description="longest prompt+response the run will feed the model")

    @field_validator("autocast", mode="before")
    @classmethod
    def _autocast_words(cls, v: Any) -> Any:
        """YAML reads `off`/`false` as False: accept it (and `bf16`) rather than fail on the user's spelling."""
        if v is False or v is None:
            return "off"
        return "bfloat16" if v == "bf16" else v


class LoraConfig(Section):
    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | str = "all-linear"
    save: Literal["adapter", "merged"] = "merged"


class OptimConfig(Section):
    lr: float = Field(1e-3, gt=0.0, le=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(1e-8, gt=0.0)
    warmup_steps: int = Field(0, ge=0)
    schedule: Literal["constant", "cosine", "linear"] = "constant"
    max_grad_norm: float | None = Field(1.0, gt=0.0)


class GenerationConfig(Section):
    """Sampling settings (exploration): temperature / top-k / top-p; stopping at EOS or a stop string."""

    max_new_tokens: int = Field(32, ge=1)
    temperature: float = Field(1.0, ge=0.0, description="0 = greedy")
    top_k: int = Field(0, ge=0, description="0 = off")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: list[str] = Field(default_factory=list, description="stop strings (not included in the response)")


Tracker = Literal["tensorboard", "mlflow", "wandb", "trackio"]


class RunConfig(Section):
    """Where the run directory goes and how often it is written."""

    name: str | None = Field(None, description="run directory name under `root` (default: command + timestamp)")
    root: str = "runs"
    seed: int = 0
    save_every: int = Field(0, ge=0, description="checkpoint every N steps (0 = only at the end)")
    log_every: int = Field(1, ge=1)
    progress: bool = True
    max_cpu_s: float | None = Field(
        None,
        gt=0,
        description="stop after the step during which this process's CPU seconds since the run opened reach this "
        "budget (evaluate and save as at the last step; the lr schedule still spans `steps`); unset = run `steps`",
    )
    max_bad_updates: int = Field(
        3, ge=1, description="non-finite loss / gradients: skip the update, stop after this many in a row"
    )
    report_to: list[Tracker] = Field(
        default_factory=list,
        description="experiment trackers that also receive every logged row (docs/guides/tracking.md); each needs "
        "its extra: pip install 'rewardloop[tensorboard]'",
    )
    sampling_seeds: Literal["row", "batch"] = Field(
        "row",
        description="row: each sample's randomness is seeded from (seed, group id, sample index), so how a batch is "
        "split (Ray workers, chunks) does not change what is sampled; batch: one generator for the whole batch",
    )
    backend: Literal["local", "ray"] = Field(
        "local",
        description="where collect runs: in this process, or in Ray rollout workers (docs/guides/distributed.md)",
    )
    ray_address: str | None = Field(
        None, description="Ray cluster to join ('auto', 'ray://host:10001'); unset = start a local Ray, no dashboard"
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the local Ray started when ray_address is unset")
    rollout_workers: int = Field(2, ge=1, description="Ray rollout workers (actors), each with a copy of the policy")
    cpus_per_worker: float = Field(1.0, gt=0.0, description="CPUs Ray reserves for each rollout worker")
    gpus_per_worker: float = Field(0.0, ge=0.0, description="GPUs per rollout worker (> 0: the worker samples on CUDA)")
    max_worker_restarts: int = Field(
        3, ge=0, description="a dead rollout worker is restarted this many times; its share of the step is re-collected"
    )
    reward_workers: int = Field(
        0, ge=0, description="Ray reward workers (actors) that score the samples; 0 = score inside the rollout workers"
    )
    cpus_per_reward_worker: float = Field(1.0, gt=0.0, description="CPUs Ray reserves for each reward worker")
    learner: Literal["driver", "actor"] = Field(
        "driver", description="where estimate + update run: in this process, or in a Ray learner actor (GRPO family)"
    )
    learner_cpus: float = Field(1.0, gt=0.0, description="CPUs Ray reserves for the learner actor")
    learner_gpus: float = Field(0.0, ge=0.0, description="GPUs of the learner actor (> 0: it trains on CUDA)")
    off_policy_steps: Literal[0, 1] = Field(
        0,
        description="1: sample batch k+1 with the weights batch k's update starts from, overlapping that update "
        "(Ray); the ratio's denominator is the sampler's log-prob (GRPO family, PPO)",
    )
    rollout_backend: Literal["hf", "vllm"] = Field(
        "hf", description="the rollout workers' sampler: the built-in engine, or vLLM (GPU workers, needs vllm)"
    )

    @field_validator("report_to", mode="before")
    @classmethod
    def _report_to_words(cls, v: Any) -> Any:
        """Accept TRL's spellings: one name, 'a,b', or 'none'."""
        if isinstance(v, str):
            return [] if v == "none" else [w.strip() for w in v.split(",") if w.strip()]
        return v

    @model_validator(mode="after")
    def _ray_needs_row_seeds(self) -> RunConfig:
        if self.backend == "ray" and self.sampling_seeds != "row":
            raise ValueError("run.backend='ray' needs run.sampling_seeds='row' (the batch is split over workers)")
        return self

    @model_validator(mode="after")
    def _ray_only_fields(self) -> RunConfig:
        ray_only = (
            ("reward_workers", self.reward_workers),
            ("rollout_backend", self.rollout_backend),
            ("learner", self.learner),
        )
        for name, value in ray_only:
            if self.backend != "ray" and value not in (0, "hf", "driver"):
                raise ValueError(f"run.{name}={value!r} needs run.backend='ray' (got {self.backend!r})")
        return self


T = TypeVar("T", bound=BaseModel)
_SCI_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _set_dotted(data: dict[str, Any], dotted: str, value: Any, source: str) -> None:
    keys = dotted.split(".")
    node = data
    for i, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            where = ".".join(keys[: i + 1])
            raise ConfigError(f"{source}: cannot set {dotted!r}: {where!r} is {child!r}, not a section")
        node = child
    node[keys[-1]] = value


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """``["optim.lr=3e-4", "gen.stop=[\\n]"]`` → ``[("optim.lr", 3e-4), ...]`` (values parsed as YAML)."""
    parsed = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str) and _SCI_FLOAT.fullmatch(value):  # YAML 1.1 reads "3e-4" as a string
            value = float(value)
        parsed.append((key.strip(), value))
    return parsed


def _section_fields(cls: type[BaseModel] | None, path: tuple) -> list[str]:
    """Field names of the section at ``path`` inside ``cls`` (empty when it cannot be resolved)."""
    for key in path:
        field = cls.model_fields.get(str(key)) if cls is not None else None
        if field is None:
            return []
        candidates = [field.annotation, *typing.get_args(field.annotation)]  # unwrap `Section | None`
        cls = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return list(cls.model_fields) if cls is not None else []


# TRL's config names → ours. Candidates in order; the first that is a key of the config being validated is named
# (so `loss_type` is `loss_agg` for GRPO and `loss` for DPO); text after the key is a note shown with it.
TRL_ALIASES: dict[str, tuple[str, ...]] = {
    "num_generations": ("group_size",),
    "beta": ("kl_coef",),
    "max_completion_length": ("gen.max_new_tokens",),
    "response_length": ("gen.max_new_tokens",),
    "temperature": ("gen.temperature",),
    "top_p": ("gen.top_p",),
    "top_k": ("gen.top_k",),
    "learning_rate": ("optim.lr",),
    "lr_scheduler_type": ("optim.schedule",),
    "weight_decay": ("optim.weight_decay",),
    "warmup_steps": ("optim.warmup_steps",),
    "max_grad_norm": ("optim.max_grad_norm",),
    "per_device_train_batch_size": (
        "batch_size",
        "prompts_per_step TRL's counts completions; this counts prompts, each sampled group_size times",
    ),
    "gradient_accumulation_steps": ("micro_batch_size the sequences per forward/backward, not how many",),
    "num_train_epochs": ("steps optimizer steps, not epochs",),
    "max_steps": ("steps",),
    "epsilon": ("clip_eps_low", "clip_eps"),
    "cliprange": ("clip_eps",),
    "epsilon_high": ("clip_eps_high",),
    "cliprange_value": ("value_clip",),
    "num_iterations": ("ppo_epochs", "epochs"),
    "num_ppo_epochs": ("epochs",),
    "loss_type": ("loss_agg", "loss"),
    "scale_rewards": ("estimator scale_rewards: false is estimator: dr_grpo",),
    "reward_funcs": ("rewards",),
    "reward_weights": ("rewards",),
    "dataset_name": ("task.path",),
    "train_dataset": ("task.path",),
    "eval_dataset": ("task.test_path",),
    "model_name_or_path": ("model.path",),
    "max_length": ("model.max_length",),
    "max_seq_length": ("model.max_length",),
    "gradient_checkpointing": ("model.gradient_checkpointing",),
    "seed": ("run.seed",),
    "output_dir": ("run.root the run directory is run.root/run.name",),
    "run_name": ("run.name",),
    "report_to": ("run.report_to",),
    "logging_steps": ("run.log_every",),
    "save_steps": ("run.save_every",),
    "eval_steps": ("eval_every",),
}


def trl_alias(cls: type[BaseModel] | None, name: str) -> str | None:
    """Our key (with its note) for TRL's ``name``, if one of its candidates is a key of ``cls``; else None."""
    for candidate in TRL_ALIASES.get(name, ()):
        key, _, note = candidate.partition(" ")
        *section, field = key.split(".")
        if field in _section_fields(cls, tuple(section)):
            return f"{key!r} — {note}" if note else repr(key)
    return None


def format_validation_error(err: ValidationError, source: str, cls: type[BaseModel] | None = None) -> str:
    """One line per problem: the dotted key, the value and what is allowed (for unknown keys: the valid keys, or
    our name for it when the key is TRL's)."""
    lines = [f"invalid config ({source}):"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        value = e.get("input")
        shown = repr(value) if not isinstance(value, dict) else "{...}"
        if len(shown) > 80:
            shown = shown[:77] + "..."
        if e["type"] == "extra_forbidden" and (ours := trl_alias(cls, str(e["loc"][-1]))):
            lines.append(f"  - unknown key {key!r}: TRL's name; rewardloop calls it {ours} (value {shown})")
        elif e["type"] == "extra_forbidden":
            allowed = _section_fields(cls, tuple(e["loc"][:-1]))
            hint = f"allowed keys here: {', '.join(allowed)}" if allowed else "check the spelling"
            lines.append(f"  - unknown key {key!r} (value {shown}); {hint}")
        else:
            lines.append(f"  - {key} = {shown}: {e['msg']}")
    return "\n".join(lines)


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` over ``base``: mappings merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_config_text(path: str | Path) -> str:
    """The text of config file ``path``; ``ConfigError`` naming it when it is missing, a directory, unreadable or
    not text (binary: NUL bytes or not UTF-8)."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"config path {path} is a directory, not a YAML config file")
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as e:
        raise ConfigError(f"config file {path} cannot be read: {e.strerror or e}") from None
    try:
        if b"\x00" in data:
            raise UnicodeDecodeError("utf-8", data, data.index(b"\x00"), data.index(b"\x00") + 1, "NUL byte")
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"config file {path} is not a text/YAML file (binary content at byte {e.start}); pass a YAML config"
        ) from None


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Read YAML ``path`` (optional), apply dotted ``overrides`` and validate into ``cls``."""
    # Start from the class's own defaults, so a file or override that sets one field of a section keeps the
    # config's defaults for the section's other fields (not the section class's bare defaults).
    data: dict[str, Any] = cls().model_dump(mode="json")
    source = "defaults"
    if path is not None:
        source = str(path)
        text = read_config_text(path)
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(loaded).__name__}")
        data = _deep_merge(data, loaded or {})
    for key, value in parse_overrides(overrides or []):
        _set_dotted(data, key, value, f"{source} + override {key}={value!r}")
    if overrides:
        source += " + overrides " + " ".join(overrides)
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source, cls)) from None


def dump_config(cfg: BaseModel) -> str:
    """The resolved config as YAML (written into every run directory)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


ModelConfig.model_rebuild()
