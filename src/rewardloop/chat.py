"""The one place that renders conversations to text: the tokenizer's chat template, or the plain fallback.

The fallback writes ``"role: content\\n"`` per message (a message without a role is the user's) and ends a
generation prompt with ``"assistant:"``, so the completion starts with a space: the same text as the built-in
tokenizer's template (``models.tokenizer.CHAT_TEMPLATE``). It matches no pretrained model's format; a model with its
own template always uses that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def text_of(value: Any) -> str:
    """A prompt or completion as text: a string as is; a conversational value (TRL passes completions as
    ``[{"role": "assistant", "content": ...}]``) as its last message's content."""
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence) and value and isinstance(value[-1], Mapping):
        return str(value[-1].get("content", ""))
    return "" if value is None else str(value)


def has_template(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` (None allowed) carries a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def render(tokenizer: Any, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool) -> str:
    """``messages`` as text: ``tokenizer``'s chat template, or ``"role: content\\n"`` lines when it has none.

    With ``add_generation_prompt`` the text ends where the assistant's answer begins. Errors of the template itself
    (jinja errors, ``raise_exception("roles must alternate")``) propagate unchanged.
    """
    if has_template(tokenizer):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    text = "".join(f"{m.get('role', 'user')}: {m['content']}\n" for m in messages)
    return text + ("assistant:" if add_generation_prompt else "")
