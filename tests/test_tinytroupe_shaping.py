"""Request shaping rules (pure): reasoning models, max_tokens vs max_completion_tokens, dedent."""

from __future__ import annotations

import pytest

from llm_ledger import InvalidInputError
from llm_ledger.shaping import dedent_messages, is_reasoning_model, shape_chat_params

SAMPLING = {"temperature": 0.2, "top_p": 0.9, "frequency_penalty": 0.1, "presence_penalty": 0.3}


@pytest.mark.parametrize(
    "model, expected",
    [
        ("o1", True),
        ("o1-mini", True),
        ("o3-mini", True),
        ("o4-mini-2025-04-16", True),
        ("gpt-5", True),
        ("gpt-5-mini", True),
        ("gpt-5-nano", True),
        ("gpt-5.1", True),
        ("GPT-5-Mini", True),
        ("gpt-5-chat-latest", False),
        ("gpt-4o", False),
        ("gpt-4o-mini", False),
        ("gpt-4.1-mini", False),
        ("omni-moderation-latest", False),
        ("my-deployment", False),
        ("text-embedding-3-small", False),
    ],
)
def test_reasoning_model_names(model: str, expected: bool) -> None:
    assert is_reasoning_model(model) is expected


def test_a_reasoning_model_loses_sampling_and_gets_completion_tokens_and_effort() -> None:
    shaped = shape_chat_params(
        {**SAMPLING, "max_tokens": 100, "n": 2},
        reasoning=True,
        explicit_max_tokens=True,
        default_reasoning_effort="high",
    )
    assert {k: v for k, v in shaped.items() if v is not None} == {
        "max_completion_tokens": 100,
        "reasoning_effort": "high",
        "n": 2,
    }


def test_an_explicit_reasoning_effort_beats_the_default() -> None:
    shaped = shape_chat_params(
        {"reasoning_effort": "low"},
        reasoning=True,
        explicit_max_tokens=False,
        default_reasoning_effort="high",
    )
    assert shaped["reasoning_effort"] == "low"


def test_a_plain_model_keeps_everything_and_gets_no_default_effort() -> None:
    params = {**SAMPLING, "max_tokens": 100}
    shaped = shape_chat_params(
        params, reasoning=False, explicit_max_tokens=True, default_reasoning_effort="high"
    )
    assert shaped == params


def test_a_default_max_tokens_gives_way_to_max_completion_tokens() -> None:
    shaped = shape_chat_params(
        {"max_tokens": 1024, "max_completion_tokens": 50},
        reasoning=False,
        explicit_max_tokens=False,
    )
    assert (shaped["max_tokens"], shaped["max_completion_tokens"]) == (None, 50)


def test_both_limits_given_explicitly_is_an_error() -> None:
    with pytest.raises(InvalidInputError, match="both given"):
        shape_chat_params(
            {"max_tokens": 10, "max_completion_tokens": 50},
            reasoning=False,
            explicit_max_tokens=True,
        )


def test_dedent_strips_like_tinytroupe_and_copies() -> None:
    original = [
        {"role": "system", "content": "\n    You are:\n      - kind\n    "},
        {"role": "user", "content": [{"type": "text", "text": "  parts stay  "}]},
        {"role": "assistant", "content": None, "tool_calls": []},
    ]
    out = dedent_messages(original)
    assert out[0] == {"role": "system", "content": "You are:\n  - kind"}
    assert out[1:] == original[1:]
    assert original[0]["content"] == "\n    You are:\n      - kind\n    "
    assert dedent_messages("not a list") == "not a list"
