"""The built-in byte-level BPE tokenizer: shipped as trained from the tasks' corpus, deterministic, lossless,
single-digit tokens, special tokens, chat template."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from rewardloop.envs.corpus import default_corpus
from rewardloop.models import build_tokenizer

TEXTS = [
    "37+48=85",
    "The kettle is great: it boils fast.",
    "héllo wörld — 😀 中文 ünïcödé",
    "def f(x):\n\treturn x  # tabs, newlines and  double  spaces  ",
    " leading space and trailing newline\n",
]


@pytest.fixture(scope="module")
def fresh():
    """The built-in tokenizer trained now from the tasks' corpus (what ``make tokenizer`` writes)."""
    return build_tokenizer(default_corpus())


def same_tokenizer(a, b, texts: list[str]) -> None:
    assert a.get_vocab() == b.get_vocab()
    assert [a(t)["input_ids"] for t in texts] == [b(t)["input_ids"] for t in texts]


def test_shipped_tokenizer_equals_a_fresh_build(tokenizer, fresh):
    """A task whose text changed needs `make tokenizer` (it rewrites src/rewardloop/models/tokenizer.json)."""
    same_tokenizer(tokenizer, fresh, TEXTS + default_corpus()[::25])


def test_training_is_deterministic(fresh):
    same_tokenizer(build_tokenizer(default_corpus()), fresh, TEXTS)


def test_builtin_size_only_without_corpus():
    with pytest.raises(ValueError, match="needs a corpus"):
        build_tokenizer(vocab_size=2048)


@pytest.mark.parametrize("text", TEXTS)
def test_round_trips_any_text(tokenizer, text):
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.unk_token_id not in ids  # byte-level: nothing is unknown
    assert tokenizer.decode(ids) == text


def test_digits_are_single_tokens(tokenizer):
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("12345+678=1023")["input_ids"])
    assert tokens == ["1", "2", "3", "4", "5", "+", "6", "7", "8", "=", "1", "0", "2", "3"]
    # no merged token anywhere in the vocabulary contains a digit
    assert all(len(tok) == 1 for tok in tokenizer.get_vocab() if any(c in "0123456789" for c in tok))


def test_special_tokens_and_no_implicit_bos(tokenizer):
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3]) == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert len(tokenizer) == 1024
    assert tokenizer("1+1=")["input_ids"][0] != tokenizer.bos_token_id  # prompts are encoded as they are trained
    assert tokenizer.decode([5, tokenizer.eos_token_id], skip_special_tokens=True) == tokenizer.decode([5])


def test_chat_template(tokenizer):
    messages = [{"role": "user", "content": "Write a review."}, {"role": "assistant", "content": "Great."}]
    assert tokenizer.apply_chat_template(messages, tokenize=False) == "user: Write a review.\nassistant: Great.\n"
    prompt = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt == "user: Write a review.\nassistant:"


def test_custom_corpus_and_vocab_size():
    tok = build_tokenizer(["aaaa bbbb aaaa bbbb"] * 10, vocab_size=300)
    assert len(tok) <= 300
    assert tok.convert_ids_to_tokens(tok("aaaa")["input_ids"]) == ["aaaa"]  # learned merge
    assert tok.decode(tok("zebra 42")["input_ids"]) == "zebra 42"  # unseen text still round-trips


def test_saved_tokenizer_reloads_in_plain_transformers(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert [loaded(t)["input_ids"] for t in TEXTS] == [tokenizer(t)["input_ids"] for t in TEXTS]
    assert (loaded.pad_token, loaded.eos_token, loaded.chat_template) == ("<pad>", "<eos>", tokenizer.chat_template)
