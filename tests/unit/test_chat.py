"""chat.render: the tokenizer's template when it has one, else the plain fallback (the built-in template's text)."""

from __future__ import annotations

import pytest

from rewardloop import chat

CONVERSATIONS = [
    [{"role": "user", "content": "Write a review."}],
    [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
    [{"role": "user", "content": "2+2="}, {"role": "assistant", "content": " 4"}, {"role": "user", "content": "and?"}],
]


@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_fallback_writes_what_the_builtin_template_writes(tokenizer, messages, add_generation_prompt):
    fallback = chat.render(None, messages, add_generation_prompt=add_generation_prompt)
    assert fallback == chat.render(tokenizer, messages, add_generation_prompt=add_generation_prompt)


def test_fallback_text():
    messages = [{"role": "user", "content": "q"}, {"content": "no role is the user's"}]
    assert chat.render(None, messages, add_generation_prompt=True) == "user: q\nuser: no role is the user's\nassistant:"
    assert chat.render(None, messages[:1], add_generation_prompt=False) == "user: q\n"


def test_a_tokenizers_own_template_is_used():
    class Templated:
        chat_template = "custom"

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            assert tokenize is False
            return f"<{len(messages)} messages, open={add_generation_prompt}>"

    assert chat.has_template(Templated()) and not chat.has_template(None)
    assert chat.render(Templated(), CONVERSATIONS[1], add_generation_prompt=True) == "<2 messages, open=True>"


def test_environment_observations_render_through_chat(tokenizer):
    from rewardloop.rollout.env_collect import render_observation

    turns = CONVERSATIONS[2]
    assert render_observation(tokenizer, "1+1=", first=True) == "1+1="
    assert render_observation(tokenizer, turns, first=True) == chat.render(tokenizer, turns, add_generation_prompt=True)
    assert render_observation(None, turns, first=False) == "user: and?\nassistant:"  # after the policy's last answer
    with pytest.raises(ValueError, match="string or a list of chat messages"):
        render_observation(tokenizer, [{"role": "user"}], first=True)
