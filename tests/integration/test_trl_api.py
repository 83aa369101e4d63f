"""The surface a TRL user expects: Dataset objects, callables with TRL's signature, model objects, HF reward models,
conversational prompts, register_reward with a callable, and a reward that fails everywhere stops the run."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from datasets import Dataset

from rewardloop.algorithms import grpo, ppo
from rewardloop.config import ConfigError, GenerationConfig, ModelConfig, OptimConfig, RunConfig, load_config
from rewardloop.envs.tasks import TaskConfig
from rewardloop.models import load_pretrained
from rewardloop.rewards import RewardError, RewardSpec, build_rewards, register_reward, reward_model
from rewardloop.rewards.model import RewardModelScorer


def arithmetic_dataset(n: int = 100) -> Dataset:
    return Dataset.from_list([{"prompt": f"{a}+{b}=", "answer": str(a + b)} for a in range(10) for b in range(10)][:n])


def grpo_cfg(tmp_path, name: str, **kw) -> grpo.GRPOConfig:
    base = dict(
        gen=GenerationConfig(max_new_tokens=8), eval_gen=GenerationConfig(max_new_tokens=8, temperature=0.0),
        prompts_per_step=8, group_size=4, steps=2, eval_every=50, eval_size=8, optim=OptimConfig(lr=1e-2),
        run=RunConfig(root=str(tmp_path), name=name, progress=False),
    )  # fmt: skip
    return grpo.GRPOConfig(**(base | kw))


def metrics(res) -> list[dict]:
    return [json.loads(line) for line in (res["run_dir"] / "metrics.jsonl").read_text().splitlines()]


def test_trl_style_grpo_script_learns_with_dataset_callable_and_model_object(tmp_path):
    """TRL's GRPOTrainer(model, reward_funcs=[f], train_dataset=ds) ported: same dataset, same function."""
    seen: dict[str, object] = {}

    def brevity(completions, completion_ids, answer, **kwargs):  # TRL's signature: keywords + dataset columns
        seen.setdefault("sizes", []).append(len(completions))
        seen.update(ids=completion_ids, answer=answer[0], kw=sorted(kwargs))
        return [-len(c) / 8 for c in completions]

    model, tok = load_pretrained(ModelConfig(preset="llama-1m", device="cpu", max_length=32))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = grpo_cfg(tmp_path, "trl", task=TaskConfig(dataset=arithmetic_dataset()), rewards=[RewardSpec(fn=brevity)],
                   steps=20)  # fmt: skip
    res = grpo.train(cfg, model=model, tokenizer=tok)
    rows = [r for r in metrics(res) if "reward/mean" in r]
    first, last = (sum(r["reward/mean"] for r in rows[i : i + 3]) / 3 for i in (0, len(rows) - 3))
    assert last > first + 1.0, (first, last)  # completions got shorter: learning happened
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())  # the object itself trained
    assert (
        set(seen["sizes"]) == {8, 32}
        and seen["answer"].isdigit()
        and "prompts" in seen["kw"]
        and "trainer_state" not in seen
    )
    assert all(isinstance(i, list) and all(isinstance(t, int) for t in i) for i in seen["ids"])
    assert "reward/brevity" in rows[-1]
    # The resolved config still writes as YAML: the in-memory dataset is left out, the callable is named.
    written = yaml.safe_load((res["run_dir"] / "config.yaml").read_text())
    assert written["task"]["name"] == "dataset" and "dataset" not in written["task"]
    assert written["rewards"][0]["fn"].endswith("brevity")


def test_conversational_prompts_reach_the_reward_as_messages(tmp_path):
    calls: list[tuple] = []

    def judge(prompts, completions, **kwargs):
        calls.append((prompts[0], completions[0]))
        return [float(len(c[0]["content"]) > 0) for c in completions]

    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": f"{a}+1="}]} for a in range(8)])
    res = grpo.train(grpo_cfg(tmp_path, "chat", task=TaskConfig(dataset=ds), rewards=[RewardSpec(fn=judge)], steps=1))
    prompt, completion = calls[0]
    assert prompt[0]["role"] == "user" and prompt[0]["content"].endswith("+1=")
    assert completion[0]["role"] == "assistant" and isinstance(completion[0]["content"], str)
    assert "reward/judge" in metrics(res)[-1]


def test_register_reward_with_a_callable(tmp_path):
    register_reward("first_is_digit", lambda prompts, completions, **_: [float(c[:1].isdigit()) for c in completions])
    fn = build_rewards([RewardSpec(fn="first_is_digit")], None).fns["first_is_digit"]
    assert fn(prompts=["p", "p"], completions=["7", "x"]) == [1.0, 0.0]
    with pytest.raises(TypeError, match="callable"):
        register_reward("bad", 3)


def test_reward_failing_on_every_sample_stops_the_run(tmp_path):
    def broken(completions, **kwargs):
        raise KeyError("missing column")

    cfg = grpo_cfg(tmp_path, "broken", task=TaskConfig(dataset=arithmetic_dataset()), rewards=[RewardSpec(fn=broken)],
                   on_reward_error="skip")  # fmt: skip
    with pytest.raises(RewardError, match=r"'broken' failed on all \d+ samples.*missing column"):
        grpo.train(cfg)
    cfg = cfg.model_copy(update={"rewards": [RewardSpec(fn=lambda completions, **_: [1.0])], "run": cfg.run})
    with pytest.raises(RewardError, match=r"returned 1 values for \d+ samples"):
        grpo.train(cfg.model_copy(update={"run": RunConfig(root=str(tmp_path), name="count", progress=False)}))


def test_old_reward_section_names_the_new_keys():
    with pytest.raises(ConfigError, match=r"rewards: \[\{fn: NAME\}\]"):
        load_config(ppo.PPOConfig, None, ["reward.functions=[exact_match]"])


@pytest.fixture
def hf_reward_model(tmp_path, tokenizer):
    """A reward model written by plain transformers (as TRL's RewardTrainer writes one): LlamaForSequenceClassification."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, num_labels=1,
                         pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    model = LlamaForSequenceClassification(config)
    torch.nn.init.normal_(model.score.weight, std=1.0)
    model.save_pretrained(tmp_path / "hf_rm")
    tokenizer.save_pretrained(tmp_path / "hf_rm")
    return tmp_path / "hf_rm", model


def test_reward_model_renders_conversational_prompts_with_its_chat_template(hf_reward_model, tokenizer):
    path, _ = hf_reward_model
    scorer = RewardModelScorer(path, "cpu")
    messages = [{"role": "user", "content": "12+30="}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    as_chat = scorer([messages], [[{"role": "assistant", "content": " 42"}]])
    assert as_chat == pytest.approx(scorer([rendered], [" 42"]), abs=0)
    assert as_chat != pytest.approx(scorer(["12+30="], [" 42"]))


def test_one_reward_model_scorer_for_every_path(hf_reward_model, tokenizer):
    """The ``reward_model`` built-in, a ``{model: dir}`` reward spec (PPO's and GRPO's path) and the HF model's own
    logits agree on the same two samples."""
    path, hf = hf_reward_model
    prompts, completions = ["12+30=", "5+5="], ["42", "7 apples"]
    via_builtin = reward_model(prompts, completions, path=str(path), device="cpu")
    via_spec = build_rewards([RewardSpec(model=str(path))], None, device="cpu").score(prompts, completions).rewards
    assert via_builtin == pytest.approx(via_spec, abs=0)
    for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        ids = tokenizer(p, add_special_tokens=True)["input_ids"] + tokenizer(c, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logit = hf(torch.tensor([ids])).logits[0, 0].item()
        assert via_spec[i] == pytest.approx(logit, abs=1e-5)
    assert via_spec[0] != pytest.approx(via_spec[1])


def test_ppo_trains_against_an_hf_reward_model(tmp_path, hf_reward_model):
    path, _ = hf_reward_model
    cfg = ppo.PPOConfig(
        model=ModelConfig(preset="llama-1m", device="cpu", max_length=32),
        task=TaskConfig(name="arithmetic", n_train=32, n_test=8),
        rewards=[RewardSpec(model=str(path))], task_reward_weight=0.0,
        gen=GenerationConfig(max_new_tokens=4), eval_gen=GenerationConfig(max_new_tokens=4, temperature=0.0),
        run=RunConfig(root=str(tmp_path), name="ppo_rm", progress=False),
        steps=1, batch_size=8, mini_batch_size=8, micro_batch_size=8, epochs=1, eval_size=8,
    )  # fmt: skip
    res = ppo.train(cfg)
    last = metrics(res)[-1]
    scorer = RewardModelScorer(path, "cpu")
    samples = [json.loads(x) for x in (res["run_dir"] / "samples.jsonl").read_text().splitlines()]
    best = samples[0]  # the logged reward is the reward model's score of that very sample
    assert best["reward"] == pytest.approx(scorer([best["prompt"]], [best["response"]])[0], abs=1e-5)
    assert last["rm/score"] == pytest.approx(last["reward/mean"], abs=1e-5)
