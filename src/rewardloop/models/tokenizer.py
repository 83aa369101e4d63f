"""The project's own tokenizer: byte-level BPE trained on the built-in tasks' text (nothing is downloaded).

Digits are split one per token (arithmetic stays learnable); any byte sequence round-trips (byte-level), so user
text outside the task corpus still encodes. Special tokens: <pad> <bos> <eos> <unk>. A simple chat template is set so
conversational datasets work with the tiny models too.

The built-in tokenizer ships trained, as package data (``tokenizer.json`` next to this file), so loading it needs no
task code. Its corpus is ``rewardloop.envs.corpus.default_corpus()``; ``make tokenizer`` retrains and rewrites the
file (``write_builtin``), and a unit test checks that a fresh build still equals the shipped one.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "<unk>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
BUILTIN_FILE = Path(__file__).with_name("tokenizer.json")
BUILTIN_VOCAB_SIZE = 1024


def train_tokenizer(corpus: Iterable[str], vocab_size: int = BUILTIN_VOCAB_SIZE) -> Tokenizer:
    """A byte-level BPE ``tokenizers.Tokenizer`` trained on ``corpus`` (deterministic for a given corpus)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    return tok


def _wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tokenizer(
    corpus: Iterable[str] | None = None, vocab_size: int = BUILTIN_VOCAB_SIZE
) -> PreTrainedTokenizerFast:
    """The built-in tokenizer (no ``corpus``: the shipped file), or one trained on ``corpus``, wrapped for transformers."""
    if corpus is not None:
        return _wrap(train_tokenizer(corpus, vocab_size))
    if vocab_size != BUILTIN_VOCAB_SIZE:
        raise ValueError(
            f"build_tokenizer(vocab_size={vocab_size}) needs a corpus: the built-in tokenizer has {BUILTIN_VOCAB_SIZE} "
            "tokens; to train another size on the built-in tasks pass rewardloop.envs.corpus.default_corpus()"
        )
    return _wrap(Tokenizer.from_file(str(BUILTIN_FILE)))


def write_builtin(corpus: Iterable[str], path: str | Path = BUILTIN_FILE) -> Path:
    """Train the built-in tokenizer on ``corpus`` and write it to ``path`` (default: the shipped package file)."""
    path = Path(path)
    train_tokenizer(corpus).save(str(path))
    return path
