"""The project's own tokenizer: byte-level BPE trained on the built-in tasks' text (nothing is downloaded).

Digits are split one per token (arithmetic stays learnable); any byte sequence round-trips (byte-level), so user
text outside the task corpus still encodes. Special tokens: <pad> <bos> <eos> <unk>. A simple chat template is set so
conversational datasets work with the tiny models too.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "<unk>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def default_corpus() -> list[str]:
    """Text from every built-in task (deterministic), used to train the default tokenizer."""
    from rewardloop.envs.arithmetic import arithmetic_corpus

    corpus = arithmetic_corpus()
    try:
        from rewardloop.envs.reviews import reviews_corpus

        corpus += reviews_corpus()
    except ImportError:
        pass
    try:
        from rewardloop.envs.code import make_code_splits

        train, test = make_code_splits()
        corpus += [r["prompt"] + r["completion"] for r in train + test]
    except ImportError:
        pass
    return corpus


def build_tokenizer(corpus: Iterable[str] | None = None, vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``corpus`` (default: the built-in tasks) and wrap it for transformers."""
    corpus = list(default_corpus() if corpus is None else corpus)
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
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast
