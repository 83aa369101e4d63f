"""Worker (a): generation tokens/s of rewardloop's engine vs ``model.generate`` on the same model and prompts.

Spec: {"model_dir", "batch_sizes": [1, 16, 64], "prompt_len": 16, "new_tokens": 64, "repeats": 3, "threads", "seed"}.
Sampling at temperature 1 (no top-k / top-p) on both sides. Tokens counted = tokens actually generated per row up to
and including EOS (a row that stops early costs rewardloop nothing more; `generate` keeps padding it).
With "bf16": true (default) both sides are measured again under bf16 autocast (``model.autocast=bfloat16``).
"""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from benchmarks.common import emit, read_spec, setup_torch, timed


def random_prompts(tok, batch: int, length: int, seed: int) -> torch.Tensor:
    """[B, length] token ids drawn from the non-special vocabulary."""
    g = torch.Generator().manual_seed(seed)
    low = max(tok.all_special_ids) + 1
    return torch.randint(low, len(tok), (batch, length), generator=g)


def generated_tokens(new: torch.Tensor, eos: set[int]) -> int:
    """Tokens in [B, T] up to and including the first EOS of each row."""
    total = 0
    for row in new.tolist():
        n = len(row)
        for i, t in enumerate(row):
            if t in eos:
                n = i + 1
                break
        total += n
    return total


def bench_hf(model, tok, ids: torch.Tensor, new_tokens: int, repeats: int) -> dict:
    mask = torch.ones_like(ids)
    eos = {tok.eos_token_id}

    @torch.no_grad()
    def run():
        return model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=True,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            max_new_tokens=new_tokens,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )

    seconds, out = timed(run, repeats=repeats)
    tokens = generated_tokens(out[:, ids.shape[1] :], eos)
    return {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds}


def bench_ours(model, tok, ids: torch.Tensor, new_tokens: int, repeats: int, seed: int) -> dict:
    from rewardloop.config import GenerationConfig
    from rewardloop.rollout import generate

    gen = GenerationConfig(max_new_tokens=new_tokens, temperature=1.0)
    prompt_ids = ids.tolist()
    generator = torch.Generator().manual_seed(seed)

    def run():
        return generate(model, tok, [""] * len(prompt_ids), gen, generator=generator, prompt_token_ids=prompt_ids)

    seconds, out = timed(run, repeats=repeats)
    tokens = int(out.response_mask.sum())
    return {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds}


def main() -> None:
    spec = read_spec()
    setup_torch(spec.get("threads"), spec.get("seed", 0))
    tok = AutoTokenizer.from_pretrained(spec["model_dir"])
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32).eval()
    n_params = sum(p.numel() for p in model.parameters())
    rows = []
    for batch in spec["batch_sizes"]:
        for prompt_len in spec.get("prompt_lens", [spec["prompt_len"]]):
            for new_tokens in spec.get("new_tokens_list", [spec["new_tokens"]]):
                ids = random_prompts(tok, batch, prompt_len, spec.get("seed", 0))
                row = {"batch": batch, "prompt_len": prompt_len, "new_tokens": new_tokens}
                for suffix, bf16 in (("", False), ("_bf16", True)):
                    if bf16 and not spec.get("bf16", True):
                        continue
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                        ours = bench_ours(model, tok, ids, new_tokens, spec["repeats"], spec.get("seed", 0))
                        hf = bench_hf(model, tok, ids, new_tokens, spec["repeats"])
                    row |= {f"ours{suffix}": ours, f"hf_generate{suffix}": hf}
                    row[f"speedup{suffix}"] = ours["tokens_per_s"] / hf["tokens_per_s"]
                rows.append(row)
    emit({"params": n_params, "rows": rows})


if __name__ == "__main__":
    main()
