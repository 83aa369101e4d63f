"""Bad input is a clear exit 2 from the CLI, naming the file / key / value: config paths that are directories or
binary files, model paths that are files, directories without weights, unreachable hub names, a max_length beyond the
model's positions."""

from __future__ import annotations

import pytest

from rewardloop import cli
from rewardloop.models import save_model


def run_cli(capsys, tmp_path, *args: str) -> str:
    """``rewardloop sft ...`` in ``tmp_path``: asserts exit status 2 and returns stderr."""
    argv = ["sft", *args, f"run.root={tmp_path / 'runs'}", "run.name=r", "run.progress=false", "model.device=cpu"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_config_path_that_is_a_directory(tmp_path, capsys):
    err = run_cli(capsys, tmp_path, "--config", str(tmp_path))
    assert str(tmp_path) in err and "is a directory" in err


def test_binary_config_file_is_named(tmp_path, capsys):
    path = tmp_path / "weights.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    err = run_cli(capsys, tmp_path, "--config", str(path))
    assert str(path) in err and "not a text/YAML file" in err


def test_non_utf8_config_file_is_named(tmp_path, capsys):
    path = tmp_path / "latin.yaml"
    path.write_bytes("steps: 3  # caf\xe9\n".encode("latin-1"))
    err = run_cli(capsys, tmp_path, "--config", str(path))
    assert str(path) in err and "not a text/YAML file" in err


@pytest.fixture
def model_dir(tmp_path, tiny_model, tokenizer):
    """A saved llama-1m (max_position_embeddings 512) with its tokenizer."""
    path = save_model(tiny_model("llama-1m"), tokenizer, tmp_path / "model")
    return path


def test_max_length_beyond_the_model_positions_names_both_numbers(tmp_path, capsys, model_dir):
    err = run_cli(capsys, tmp_path, f"model.path={model_dir}", "model.max_length=4096")
    assert "model.max_length=4096" in err and "max_position_embeddings=512" in err


def test_max_length_checks_gpt2_n_positions(tmp_path, capsys, tokenizer):
    from transformers import AutoModelForCausalLM, GPT2Config

    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=16, n_layer=1, n_head=2, bos_token_id=1)
    config.eos_token_id = config.pad_token_id = 2
    path = save_model(AutoModelForCausalLM.from_config(config), tokenizer, tmp_path / "gpt2")
    err = run_cli(capsys, tmp_path, f"model.path={path}", "model.max_length=128")
    assert "model.max_length=128" in err and "=64" in err  # GPT2Config reads n_positions as max_position_embeddings


def test_model_directory_without_weights(tmp_path, capsys, model_dir):
    (model_dir / "model.safetensors").unlink()
    err = run_cli(capsys, tmp_path, f"model.path={model_dir}")
    assert f"model.path={str(model_dir)!r}" in err and "no model weights" in err


def test_model_directory_without_config(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    err = run_cli(capsys, tmp_path, f"model.path={empty}")
    assert str(empty) in err and "config.json" in err


def test_text_file_as_model_path(tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("not a model\n")
    err = run_cli(capsys, tmp_path, f"model.path={path}")
    assert str(path) in err and "is a file, not a model directory" in err


def test_hub_name_unreachable_offline(tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read once, when the hub client loads
    name = "rewardloop-test/no-such-model-xyz"
    err = run_cli(capsys, tmp_path, f"model.path={name}")
    assert name in err and "no local directory" in err and "offline" in err
