"""Building the context a stateless model sees for one turn."""

from __future__ import annotations

from collections.abc import Sequence

from llm_backend.ports import ContextMessage, Role


def build_context(
    *,
    system_prompt: str,
    history: Sequence[ContextMessage],
    new_content: str,
    max_chars: int,
    max_messages: int,
) -> list[ContextMessage]:
    """The system prompt, then as many of the newest messages as fit, then the new message.

    The system prompt and the new message always go; older messages fill what
    is left of `max_chars` and `max_messages`, newest first. The kept history
    starts at a user message so the model never sees an answer without its
    question.
    """
    budget = max_chars - len(system_prompt) - len(new_content)
    room = max_messages - 1
    kept: list[ContextMessage] = []
    for message in reversed(history):
        if room <= 0 or len(message.content) > budget:
            break
        kept.append(message)
        budget -= len(message.content)
        room -= 1
    kept.reverse()
    while kept and kept[0].role != Role.USER:
        kept.pop(0)
    context = [ContextMessage(Role.SYSTEM, system_prompt)] if system_prompt else []
    context += kept
    context.append(ContextMessage(Role.USER, new_content))
    return context


# A model's tokenizer is the model server's; the gateway only needs a fair count to charge
# a turn the model server never reported on (cut short): about four characters a token,
# plus a few tokens of chat template per message.
CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4


def estimate_input_tokens(context: Sequence[ContextMessage]) -> int:
    """The input tokens of what the model was sent, estimated."""
    return sum(-(-len(m.content) // CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE for m in context)
