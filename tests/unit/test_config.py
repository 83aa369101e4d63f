"""Config loading: YAML + dotted overrides, errors that name the key, the value and what is allowed; every preset loads."""

from __future__ import annotations

import contextlib
import importlib
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rewardloop.algorithms.sft import SFTConfig
from rewardloop.config import ConfigError, ModelConfig, Section, dump_config, load_config, parse_overrides

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PRESETS = sorted(CONFIGS.glob("*/*.yaml")) + sorted(CONFIGS.glob("*/*.yml"))


def error(path=None, overrides=None, cls=SFTConfig) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(cls, path, overrides)
    return str(info.value)


def test_defaults_and_dotted_overrides():
    cfg = load_config(SFTConfig, None, ["optim.lr=3e-4", "model.path=/some/dir", "steps=7", "gen.stop=[\"\\n\", '##']"])
    assert cfg.optim.lr == 3e-4 and isinstance(cfg.optim.lr, float)  # YAML 1.1 alone would read "3e-4" as a string
    assert cfg.model.path == "/some/dir" and cfg.steps == 7
    assert cfg.gen.stop == ["\n", "##"]
    assert load_config(SFTConfig).steps == SFTConfig().steps


def test_parse_overrides_types():
    parsed = dict(parse_overrides(["a.b=1", "a.c=1.5", "a.d=1e-5", "a.e=true", "a.f=text", "a.g=", "a.h=null"]))
    assert parsed == {"a.b": 1, "a.c": 1.5, "a.d": 1e-5, "a.e": True, "a.f": "text", "a.g": "", "a.h": None}
    assert isinstance(parsed["a.d"], float)
    for bad in ["novalue", "=3", "a..b=1", "a.=1"]:
        with pytest.raises(ConfigError, match=r"key\.sub=value"):
            parse_overrides([bad])


def test_override_wins_over_file_and_creates_sections(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 0.01\nsteps: 5\n")
    cfg = load_config(SFTConfig, path, ["optim.lr=0.02", "model.lora.r=4"])
    assert (cfg.optim.lr, cfg.steps, cfg.model.lora.r) == (0.02, 5, 4)


def test_unknown_key_names_key_value_and_allowed_keys(tmp_path):
    msg = error(overrides=["optim.lrr=0.1"])
    assert "optim.lrr" in msg and "0.1" in msg
    assert "lr" in msg.split("allowed")[1] and "weight_decay" in msg  # the valid keys of the `optim` section
    msg = error(overrides=["stepz=3"])
    assert "'stepz'" in msg and "steps" in msg.split("allowed")[1]
    msg = error(overrides=["model.lora.rank=4"])  # nested optional section
    assert "model.lora.rank" in msg and "alpha" in msg.split("allowed")[1]
    path = tmp_path / "typo.yaml"
    path.write_text("optim:\n  learning_rate: 0.1\n")
    msg = error(path)
    assert str(path) in msg and "optim.learning_rate" in msg and "0.1" in msg


@pytest.mark.parametrize(
    ("override", "key", "value", "allowed"),
    [
        ("steps=abc", "steps", "'abc'", "valid integer"),
        ("optim.lr=fast", "optim.lr", "'fast'", "valid number"),
        ("model.dtype=float8", "model.dtype", "'float8'", "'float32', 'bfloat16' or 'float16'"),
        ("optim.schedule=step", "optim.schedule", "'step'", "'constant', 'cosine' or 'linear'"),
        ("run.progress=maybe", "run.progress", "'maybe'", "valid boolean"),
    ],
)
def test_wrong_type_names_key_value_and_allowed(override, key, value, allowed):
    msg = error(overrides=[override])
    assert f"{key} = {value}" in msg and allowed in msg


@pytest.mark.parametrize(
    ("override", "key", "allowed"),
    [
        ("optim.lr=-1", "optim.lr = -1", "greater than 0"),
        ("optim.lr=2", "optim.lr = 2", "less than or equal to 1"),
        ("steps=0", "steps = 0", "greater than or equal to 1"),
        ("gen.top_p=0", "gen.top_p = 0", "greater than 0"),
        ("gen.temperature=-0.5", "gen.temperature = -0.5", "greater than or equal to 0"),
        ("model.lora.dropout=1.0", "model.lora.dropout = 1.0", "less than 1"),
        ("model.max_length=4", "model.max_length = 4", "greater than or equal to 8"),
    ],
)
def test_out_of_range_names_key_value_and_bound(override, key, allowed):
    msg = error(overrides=[override])
    assert key in msg and allowed in msg


def test_all_problems_are_reported_at_once():
    msg = error(overrides=["steps=0", "optim.lr=-1", "bogus=1"])
    assert "steps = 0" in msg and "optim.lr = -1" in msg and "'bogus'" in msg


def test_override_into_a_non_section_is_an_error(tmp_path):
    assert "cannot set 'steps.x': 'steps' is 800, not a section" in error(overrides=["steps.x=1"])
    path = tmp_path / "c.yaml"
    path.write_text("steps: 5\n")
    msg = error(path, ["steps.x=1"])
    assert str(path) in msg and "'steps' is 5, not a section" in msg


def test_yaml_file_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    assert str(missing) in error(missing) and "not found" in error(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("optim: {lr: 0.1\nsteps: [\n")
    msg = error(broken)
    assert str(broken) in msg and "not valid YAML" in msg
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("- 1\n- 2\n")
    assert str(scalar) in error(scalar) and "mapping" in error(scalar)
    bad_value = tmp_path / "bad.yaml"
    bad_value.write_text("steps: -3\n")
    msg = error(bad_value)
    assert str(bad_value) in msg and "steps = -3" in msg


def test_empty_file_gives_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(SFTConfig, path) == SFTConfig()


def test_sections_forbid_unknown_keys_and_validate_assignment():
    with pytest.raises(ValueError, match="not_a_field"):
        ModelConfig(not_a_field=1)
    cfg = ModelConfig()
    with pytest.raises(ValueError, match="max_length"):
        cfg.max_length = 2
    assert issubclass(SFTConfig, Section)


def test_dump_config_round_trips(tmp_path):
    cfg = load_config(SFTConfig, None, ["optim.lr=3e-4", "model.lora.r=4", "gen.stop=[x]"])
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(SFTConfig, path) == cfg


# -- every preset under configs/<command>/ loads with that command's Config class ----------------------------------


def command_config_class(command: str):
    """Config class for ``command`` through the CLI's table: name → (module, config class name, function name)."""
    from rewardloop.cli import COMMANDS

    assert command in COMMANDS, f"configs/{command}/ has no command in rewardloop.cli.COMMANDS ({sorted(COMMANDS)})"
    module, class_name = COMMANDS[command][0], COMMANDS[command][1]
    return getattr(importlib.import_module(module), class_name), list(getattr(COMMANDS[command], "defaults", ()))


@pytest.mark.parametrize("path", PRESETS, ids=[f"{p.parent.name}/{p.name}" for p in PRESETS])
def test_every_preset_loads_with_its_command_config(path):
    cls, defaults = command_config_class(path.parent.name)
    cfg = load_config(cls, path, defaults)
    assert isinstance(cfg, cls)


def test_every_configs_folder_is_a_command():
    from rewardloop.cli import COMMANDS

    folders = sorted(p.name for p in CONFIGS.iterdir() if p.is_dir()) if CONFIGS.exists() else []
    assert [f for f in folders if f not in COMMANDS] == []


def test_setting_one_field_keeps_the_configs_other_section_defaults(tmp_path):
    """SFTConfig's optim default (cosine, warm-up 50) must survive `optim.lr=...` from a file or an override."""
    from rewardloop.algorithms.sft import SFTConfig

    cfg = load_config(SFTConfig, None, ["optim.lr=1e-3"])
    assert cfg.optim.lr == 1e-3 and cfg.optim.schedule == "cosine" and cfg.optim.warmup_steps == 50
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 0.002\n")
    cfg = load_config(SFTConfig, path)
    assert cfg.optim.lr == 0.002 and cfg.optim.schedule == "cosine"


@pytest.mark.parametrize(
    ("word", "expected"), [("off", "off"), ("false", "off"), ("bf16", "bfloat16"), ("bfloat16", "bfloat16")]
)
def test_autocast_accepts_yaml_off_and_short_names(tmp_path, word, expected):
    # YAML (and so the override parser) reads `off` as False; the option must still accept the word it documents.
    assert load_config(SFTConfig, None, [f"model.autocast={word}"]).model.autocast == expected
    f = tmp_path / "c.yaml"
    f.write_text(f"model:\n  autocast: {word}\n")
    assert load_config(SFTConfig, f).model.autocast == expected


def test_autocast_rejects_other_values_naming_them():
    with pytest.raises(ConfigError, match=r"model.autocast = 'fp8'.*'off' or 'bfloat16'"):
        load_config(SFTConfig, None, ["model.autocast=fp8"])


# -- TRL's names for our keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "override", "ours"),
    [
        ("grpo", "num_generations=4", "'group_size'"),
        ("grpo", "beta=0.04", "'kl_coef'"),
        ("grpo", "max_completion_length=64", "'gen.max_new_tokens'"),
        ("grpo", "learning_rate=1e-6", "'optim.lr'"),
        ("grpo", "per_device_train_batch_size=8", "'prompts_per_step' — TRL's counts completions"),
        ("grpo", "loss_type=dr_grpo", "'loss_agg'"),
        ("grpo", "epsilon_high=0.28", "'clip_eps_high'"),
        ("grpo", "scale_rewards=false", "'estimator' — scale_rewards: false is estimator: dr_grpo"),
        ("grpo", "optim.learning_rate=1e-6", "'optim.lr'"),  # inside a section too
        ("dpo", "per_device_train_batch_size=8", "'batch_size'"),
        ("dpo", "loss_type=ipo", "'loss'"),  # the same TRL name, another key of ours
        ("dpo", "train_dataset=prefs.jsonl", "'task.path'"),
        ("dpo", "report_to=tensorboard", "'run.report_to'"),
        ("sft", "num_train_epochs=3", "'steps' — optimizer steps, not epochs"),
    ],
)
def test_trl_name_says_what_rewardloop_calls_it(command, override, ours):
    cls, _ = command_config_class(command)
    key = override.split("=")[0]
    msg = error(overrides=[override], cls=cls)
    assert f"unknown key {key!r}: TRL's name; rewardloop calls it {ours}" in msg and "(value " in msg


def test_trl_name_without_a_counterpart_in_this_config_lists_the_allowed_keys():
    cls, _ = command_config_class("dpo")
    msg = error(overrides=["num_generations=4"], cls=cls)  # DPO samples nothing: no group_size to point to
    assert "TRL's name" not in msg and "allowed keys here" in msg and "beta" in msg


def test_every_trl_alias_points_to_a_key_of_some_command():
    from rewardloop.cli import COMMANDS
    from rewardloop.config import TRL_ALIASES, trl_alias

    classes = [command_config_class(c)[0] for c in COMMANDS]
    assert [name for name in TRL_ALIASES if not any(trl_alias(cls, name) for cls in classes)] == []


def test_cli_config_error_exits_2_and_creates_no_run_directory(tmp_path, capsys):
    from rewardloop.cli import main

    root = tmp_path / "runs"
    assert main(["grpo", "num_generations=4", f"run.root={root}", "run.name=bad"]) == 2
    err = capsys.readouterr().err
    assert "rewardloop grpo: error:" in err and "rewardloop calls it 'group_size'" in err
    assert not root.exists()
    assert main(["sft", "steps=2", f"run.root={root}", "run.report_to=[comet]"]) == 2
    assert "run.report_to" in capsys.readouterr().err and not root.exists()


# -- property-based fuzzing: every YAML mapping / override ends in a valid config or a ConfigError ----------------
_KEYS = st.sampled_from(["model", "optim", "run", "gen", "task", "steps", "lr", "max_length", "path", "seed", "lora"])
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**12), 10**12), st.floats(allow_nan=True), st.text(max_size=20)
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.one_of(_KEYS, st.text(max_size=8)), inner, max_size=3)
    ),
    max_leaves=12,
)
_MAPPINGS = st.dictionaries(st.one_of(_KEYS, st.text(max_size=10), st.integers(), st.booleans()), _VALUES, max_size=5)


def _valid_or_config_error(path=None, overrides=None) -> None:
    with contextlib.suppress(ConfigError):
        assert isinstance(load_config(SFTConfig, path, overrides), SFTConfig)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=_MAPPINGS)
def test_fuzz_yaml_mappings_load_or_raise_config_error(tmp_path, data):
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    _valid_or_config_error(path)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))))
def test_fuzz_arbitrary_file_text_loads_or_raises_config_error(tmp_path, text):
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    _valid_or_config_error(path)


_DOTTED = st.lists(st.one_of(_KEYS, st.text(max_size=6)), min_size=0, max_size=3).map(".".join)


@settings(max_examples=200, deadline=None)
@given(overrides=st.lists(st.tuples(_DOTTED, st.text(max_size=20)).map("=".join), max_size=4))
def test_fuzz_overrides_load_or_raise_config_error(overrides):
    _valid_or_config_error(None, overrides)
