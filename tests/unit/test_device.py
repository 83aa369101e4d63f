"""Device and precision are probed, not assumed (models.loading.resolve_device / check_precision). The CPU decisions
run here; the CUDA / MPS branches are exercised by faking what torch reports."""

from __future__ import annotations

import pytest
import torch

from rewardloop.config import ModelConfig
from rewardloop.models import load_pretrained
from rewardloop.models.loading import check_precision, resolve_device


def fake(monkeypatch, cuda: bool = False, mps: bool = False, bf16: bool = True, count: int = 1) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count if cuda else 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Fake T4")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"), [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")]
)  # fmt: skip
def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    fake(monkeypatch, cuda=cuda, mps=mps)
    assert resolve_device("auto").type == expected


@pytest.mark.parametrize(
    ("name", "message"),
    [("cuda", "CUDA is not available"), ("cuda:1", "CUDA is not available"), ("mps", "MPS is not available"),
     ("tpu9", "is not a device")],
)  # fmt: skip
def test_a_device_this_machine_cannot_run_is_a_clear_error(monkeypatch, name, message):
    fake(monkeypatch)
    with pytest.raises(ValueError, match=message):
        resolve_device(name)


def test_a_cuda_index_beyond_the_devices_is_named(monkeypatch):
    fake(monkeypatch, cuda=True, count=1)
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ValueError, match="has 1 CUDA device"):
        resolve_device("cuda:3")


def test_precision_decisions():
    cpu, cuda, mps = torch.device("cpu"), torch.device("cuda"), torch.device("mps")
    check_precision(ModelConfig(dtype="bfloat16", autocast="bfloat16"), cpu)  # bf16 on CPU: supported
    with pytest.raises(ValueError, match="float16 cannot train on CPU"):
        check_precision(ModelConfig(dtype="float16"), cpu)
    with pytest.raises(ValueError, match="autocast=bfloat16 is not supported on Apple MPS"):
        check_precision(ModelConfig(autocast="bfloat16"), mps)
    check_precision(ModelConfig(dtype="float16"), cuda)  # fp16 weights on a GPU: allowed


def test_bf16_on_a_gpu_without_it_is_refused(monkeypatch):
    fake(monkeypatch, cuda=True, bf16=False)
    with pytest.raises(ValueError, match="not supported on Fake T4"):
        check_precision(ModelConfig(autocast="bfloat16"), torch.device("cuda"))
    fake(monkeypatch, cuda=True, bf16=True)
    check_precision(ModelConfig(autocast="bfloat16"), torch.device("cuda"))


def test_the_cli_answers_a_missing_gpu_with_exit_2(tmp_path, capsys, monkeypatch):
    from rewardloop.cli import main

    fake(monkeypatch)
    code = main(["sft", "model.device=cuda", f"run.root={tmp_path}", "steps=1", "run.progress=false"])
    assert code == 2 and "CUDA is not available" in capsys.readouterr().err
    with pytest.raises(ValueError, match="float16 cannot train on CPU"):
        load_pretrained(ModelConfig(preset="llama-1m", device="cpu", dtype="float16"))
