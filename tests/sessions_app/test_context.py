"""Building the model's context from a session's history."""

from __future__ import annotations

from llm_backend.ports import ContextMessage, Role
from sessions_app.context import build_context
from tests.factories import make_turn


def history(turns: int) -> list:  # type: ignore[type-arg]
    return [ContextMessage(m.role, m.content) for n in range(1, turns + 1) for m in make_turn(n)]


def test_everything_fits_system_prompt_first_new_message_last() -> None:
    context = build_context(
        system_prompt="Be brief.", history=history(2), new_content="next?", max_chars=10_000, max_messages=100
    )

    assert context[0] == ContextMessage(Role.SYSTEM, "Be brief.")
    assert [m.content for m in context[1:]] == ["question 1", "answer 1", "question 2", "answer 2", "next?"]
    assert context[-1].role == Role.USER


def test_no_system_message_when_the_prompt_is_empty() -> None:
    context = build_context(system_prompt="", history=[], new_content="hi", max_chars=100, max_messages=10)

    assert context == [ContextMessage(Role.USER, "hi")]


def test_the_character_budget_keeps_the_newest_whole_turns() -> None:
    # Each message is 10 or 8 characters; "next?" is 5; the prompt 9.
    context = build_context(
        system_prompt="Be brief.", history=history(3), new_content="next?", max_chars=9 + 5 + 18 + 3, max_messages=100
    )

    assert [m.content for m in context] == ["Be brief.", "question 3", "answer 3", "next?"]


def test_history_never_starts_with_an_answer() -> None:
    # Room for "answer 2", "question 3", "answer 3" but "answer 2" has no question: dropped.
    context = build_context(
        system_prompt="", history=history(3), new_content="x", max_chars=1 + 8 + 10 + 8 + 5, max_messages=100
    )

    assert [m.content for m in context] == ["question 3", "answer 3", "x"]


def test_the_message_cap_counts_the_new_message() -> None:
    context = build_context(system_prompt="", history=history(5), new_content="x", max_chars=10_000, max_messages=3)

    assert [m.content for m in context] == ["question 5", "answer 5", "x"]


def test_a_new_message_over_budget_still_goes_alone() -> None:
    context = build_context(
        system_prompt="sys", history=history(2), new_content="y" * 50, max_chars=10, max_messages=10
    )

    assert [m.role for m in context] == [Role.SYSTEM, Role.USER]
