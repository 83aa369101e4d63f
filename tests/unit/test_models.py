"""Models: presets, saving that plain transformers reloads, loading plain-transformers models by path, LoRA."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    LlamaConfig,
    Qwen2Config,
)

from rewardloop.algorithms.common import make_optimizer
from rewardloop.algorithms.sft import SFTConfig, nll_loss
from rewardloop.algorithms.sft import train as sft_train
from rewardloop.config import GenerationConfig, LoraConfig, ModelConfig, OptimConfig, RunConfig
from rewardloop.data.tokenize import collate, tokenize_row
from rewardloop.envs.tasks import TaskConfig
from rewardloop.models import (
    PRESETS,
    count_parameters,
    load_pretrained,
    load_tokenizer,
    mixed_precision,
    preset_config,
    resolve_device,
    save_model,
)
from rewardloop.runs import read_metrics

IDS = torch.tensor([[5, 20, 14, 21, 32, 23, 40, 41], [7, 8, 9, 10, 11, 12, 13, 30]])


def logits(model, ids=IDS) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


# approximate parameter counts per size with the 1024-token vocabulary: (low, high)
SIZE_RANGE = {"1m": (0.5e6, 1.5e6), "4m": (2e6, 6e6), "10m": (6e6, 15e6), "30m": (18e6, 40e6)}


@pytest.mark.parametrize("name", PRESETS)
def test_presets_have_the_advertised_size(name):
    config = preset_config(name, vocab_size=1024, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    assert config.model_type == name.split("-")[0]
    with torch.device("meta"):
        n = count_parameters(AutoModelForCausalLM.from_config(config))
    low, high = SIZE_RANGE[name.split("-")[1]]
    assert low < n < high, f"{name}: {n} parameters"


def test_unknown_preset_lists_the_allowed_ones():
    with pytest.raises(ValueError, match=r"llama-1m.*qwen2-30m"):
        preset_config("gpt-1m", vocab_size=10)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("preset", ["llama-1m", "qwen2-1m"])
def test_saved_model_reloads_in_plain_transformers_with_identical_logits(preset, tmp_path):
    torch.manual_seed(0)
    model, tok = load_pretrained(ModelConfig(preset=preset, device="cpu", max_length=64))
    path = save_model(model, tok, tmp_path / "out")
    assert (path / "model.safetensors").exists() and (path / "config.json").exists()
    assert not list(tmp_path.glob(".out.tmp-*"))  # the temporary directory was renamed into place
    plain = AutoModelForCausalLM.from_pretrained(path)
    plain_tok = AutoTokenizer.from_pretrained(path)
    assert plain.config.model_type == preset.split("-")[0]
    assert torch.equal(logits(plain), logits(model.eval()))
    assert plain_tok("37+48=")["input_ids"] == tok("37+48=")["input_ids"]
    assert plain_tok.pad_token_id == tok.pad_token_id and plain_tok.eos_token_id == tok.eos_token_id
    # saving again over the same directory replaces it atomically
    with torch.no_grad():
        model.model.norm.weight.mul_(2.0)
    save_model(model, tok, path)
    assert torch.equal(logits(AutoModelForCausalLM.from_pretrained(path)), logits(model))


def plain_config(arch: str, vocab: int):
    """A tiny random config of each architecture, as a user would build it with plain transformers."""
    common = dict(vocab_size=vocab, bos_token_id=1, eos_token_id=2)
    if arch == "gpt2":
        return GPT2Config(n_positions=64, n_embd=32, n_layer=2, n_head=2, **common)
    cls = LlamaConfig if arch == "llama" else Qwen2Config
    return cls(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        **common,
    )


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_plain_transformers_model_loads_by_path_and_trains_one_sft_step(arch, tmp_path, tokenizer):
    src = tmp_path / f"plain-{arch}"
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(plain_config(arch, len(tokenizer))).save_pretrained(src)
    tokenizer.save_pretrained(src)
    cfg = SFTConfig(
        model=ModelConfig(path=str(src), device="cpu", max_length=32),
        task=TaskConfig(n_train=16, n_test=4),
        optim=OptimConfig(lr=1e-2),
        gen=GenerationConfig(max_new_tokens=3, temperature=0.0),
        run=RunConfig(root=str(tmp_path / "runs"), name=arch, progress=False),
        steps=1,
        batch_size=8,
        eval_size=4,
    )
    result = sft_train(cfg)
    before, after = load_file(src / "model.safetensors"), load_file(result["model_dir"] / "model.safetensors")
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) > len(before) // 2, "one SFT step should move most weights"
    assert all(torch.isfinite(t).all() for t in after.values())
    assert AutoModelForCausalLM.from_pretrained(result["model_dir"]).config.model_type == arch
    assert result["final"]["step"] == 1 and result["final"]["eval/loss"] > 0


def test_tokenizer_without_pad_gets_eos_as_pad(tmp_path):
    tok = AutoTokenizer.from_pretrained(_saved_tokenizer(tmp_path))
    assert tok.pad_token is None
    tok.save_pretrained(tmp_path / "nopad")
    loaded = load_tokenizer(ModelConfig(path=str(tmp_path / "nopad")))
    assert loaded.pad_token == loaded.eos_token == "<eos>"


def _saved_tokenizer(tmp_path):
    from rewardloop.models import build_tokenizer

    tok = build_tokenizer(["abc def"] * 4, vocab_size=280)
    tok.pad_token = None
    tok.save_pretrained(tmp_path / "tok")
    return tmp_path / "tok"


# -- LoRA -------------------------------------------------------------------------------------------------------


@pytest.fixture
def base_dir(tmp_path, tokenizer, tiny_model):
    """A llama-1m base model saved with its tokenizer (the starting point of a LoRA run)."""
    return save_model(tiny_model("llama-1m"), tokenizer, tmp_path / "base")


def one_step(model, tok) -> None:
    rows = [{"prompt": f"{a}+{a}=", "completion": str(2 * a)} for a in range(8)]
    batch = collate([tokenize_row(tok, r, 32) for r in rows], tok.pad_token_id, "cpu")
    opt, _ = make_optimizer(model.parameters(), OptimConfig(lr=1e-2), 1)
    nll_loss(model.train(), batch).backward()
    opt.step()
    model.eval()


def test_lora_trains_only_adapters_and_saves_merged_and_as_adapter(base_dir, tmp_path):
    pytest.importorskip("peft")
    from peft import PeftModel

    model, tok = load_pretrained(ModelConfig(path=str(base_dir), device="cpu", lora=LoraConfig(r=4, alpha=8)))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert count_parameters(model, trainable_only=True) < count_parameters(model) / 10
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    lora_b = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    one_step(model, tok)
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
    assert all(not torch.equal(p, lora_b[n]) for n, p in model.named_parameters() if n in lora_b)
    expected = logits(model)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    assert not torch.allclose(logits(base), expected, atol=1e-4)  # the adapters changed the function

    merged = save_model(model, tok, tmp_path / "merged", lora_save="merged")
    plain = AutoModelForCausalLM.from_pretrained(merged)  # plain transformers, no peft
    assert not any("lora" in k for k in load_file(merged / "model.safetensors"))
    torch.testing.assert_close(logits(plain), expected, atol=1e-4, rtol=1e-4)
    assert hasattr(model, "peft_config")  # merging worked on a copy; the training model keeps its adapters

    adapter = save_model(model, tok, tmp_path / "adapter", lora_save="adapter")
    assert (adapter / "adapter_config.json").exists() and (adapter / "adapter_model.safetensors").exists()
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter)
    torch.testing.assert_close(logits(reloaded), expected, atol=1e-5, rtol=1e-5)


def peft_model_with_nonzero_adapters(base):
    """A LoRA-wrapped ``base`` whose adapters change the function (fresh LoRA B matrices are 0)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    model = get_peft_model(base, PeftLoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return model.eval()


def test_a_saved_adapter_is_the_next_stage_model_path(base_dir, tmp_path, tokenizer):
    pytest.importorskip("peft")
    peft_model = peft_model_with_nonzero_adapters(AutoModelForCausalLM.from_pretrained(base_dir))
    expected = logits(peft_model)
    assert not torch.allclose(logits(AutoModelForCausalLM.from_pretrained(base_dir)), expected, atol=1e-4)
    adapter = save_model(peft_model, tokenizer, tmp_path / "adapter", lora_save="adapter")

    merged, tok = load_pretrained(ModelConfig(path=str(adapter), device="cpu"))  # no lora: merged, all trainable
    assert not hasattr(merged, "peft_config") and all(p.requires_grad for p in merged.parameters())
    torch.testing.assert_close(logits(merged.eval()), expected, atol=1e-4, rtol=1e-4)  # merging rounds in float32
    assert tok("37+48=")["input_ids"] == tokenizer("37+48=")["input_ids"]

    kept, _ = load_pretrained(ModelConfig(path=str(adapter), device="cpu", lora=LoraConfig()))  # lora: keep training
    trainable = [n for n, p in kept.named_parameters() if p.requires_grad]
    assert hasattr(kept, "peft_config") and trainable and all("lora_" in n for n in trainable)
    torch.testing.assert_close(logits(kept.eval()), expected, atol=1e-5, rtol=1e-5)


def test_an_adapter_on_a_preset_names_the_problem(tmp_path, tiny_model, tokenizer):
    pytest.importorskip("peft")
    adapter = save_model(peft_model_with_nonzero_adapters(tiny_model()), tokenizer, tmp_path / "a", lora_save="adapter")
    with pytest.raises(ValueError, match=r"adapter names no base model.*merged"):
        load_pretrained(ModelConfig(path=str(adapter), device="cpu"))


def test_sft_with_the_lora_flag_checkpoints_resumes_and_saves_an_adapter(base_dir, tmp_path):
    pytest.importorskip("peft")
    cfg = SFTConfig(
        model=ModelConfig(path=str(base_dir), device="cpu", max_length=32, lora=LoraConfig(r=4, save="adapter")),
        task=TaskConfig(n_train=16, n_test=4),
        optim=OptimConfig(lr=1e-2),
        gen=GenerationConfig(max_new_tokens=3, temperature=0.0),
        run=RunConfig(root=str(tmp_path / "runs"), name="lora", progress=False),
        steps=2,
        batch_size=8,
        eval_size=4,
    )
    first = sft_train(cfg)
    ckpt = first["run_dir"] / "checkpoints" / "step-0000002" / "policy"
    assert (ckpt / "adapter_model.safetensors").exists() and not (ckpt / "model.safetensors").exists()
    adapter_2 = load_file(first["model_dir"] / "adapter_model.safetensors")
    resumed = sft_train(cfg.model_copy(update={"steps": 3}), resume=True)  # restores the adapter, trains one more
    adapter_3 = load_file(resumed["model_dir"] / "adapter_model.safetensors")
    assert [r["step"] for r in read_metrics(resumed["run_dir"]) if "train/loss" in r] == [1, 2, 3]
    assert resumed["final"]["step"] == 3
    assert any(not torch.equal(adapter_2[k], adapter_3[k]) for k in adapter_2)


def test_a_missing_local_model_directory_is_named_plainly(tmp_path):
    from rewardloop.config import ModelConfig
    from rewardloop.models import load_pretrained

    missing = str(tmp_path / "runs" / "nope" / "final" / "policy")
    with pytest.raises(FileNotFoundError, match=r"model\.path=.*nope.*no such local directory"):
        load_pretrained(ModelConfig(path=missing))


def test_mixed_precision_runs_matmuls_in_bf16_and_keeps_float32_weights_and_grads(tokenizer):
    cfg = ModelConfig(preset="llama-1m", device="cpu", autocast="bfloat16")
    torch.manual_seed(0)
    model, _ = load_pretrained(cfg)
    seen: list[torch.dtype] = []
    model.model.layers[0].mlp.down_proj.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    with mixed_precision(cfg, torch.device("cpu")):
        out = model(input_ids=IDS).logits
    out.float().logsumexp(-1).mean().backward()
    assert seen == [torch.bfloat16]
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in model.parameters())
    with mixed_precision(ModelConfig(autocast="off"), torch.device("cpu")):
        model(input_ids=IDS)
    assert seen[-1] == torch.float32  # "off" is a no-op


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model, _ = load_pretrained(ModelConfig(preset="llama-1m", device="cpu", gradient_checkpointing=checkpointing))
        model.train()
        model(input_ids=IDS).logits.logsumexp(-1).mean().backward()
        grads.append(model.model.layers[0].self_attn.q_proj.weight.grad)
    assert grads[1].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1])
