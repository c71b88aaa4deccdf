"""Malformed requests fail fast with a clear error, before anything is sent or recorded.

InvalidInputError is a ValueError, InvalidInputTypeError a TypeError, and both are
LedgerErrors. Each case checks the exact message, that the server saw no request, and
that the ledger holds nothing (it may not even have been opened).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

import llm_ledger
from llm_ledger import InvalidInputError, InvalidInputTypeError, LedgerError
from llm_ledger.keys import ROLES

TABLES = ("requests", "responses", "cache_entries", "call_log", "call_tags")
VALID = ", ".join(sorted(ROLES))
HI = [{"role": "user", "content": "hi"}]
# The json module's own words (Python 3.13 adds ": nan" to them).
NOT_FINITE = re.compile(
    r"request cannot be stored as JSON \(Out of range float values are not JSON compliant"
    r"(: -?(nan|inf))?\); replace NaN/inf floats with numbers or strings"
)


def ledger_rows(db_path: Path) -> dict[str, int]:
    """Rows per table; an absent or empty file (ledger never opened) counts as none."""
    llm_ledger.flush()  # calls are written behind them (writes="journal")
    if not db_path.exists() or db_path.stat().st_size == 0:
        return dict.fromkeys(TABLES, 0)
    llm_ledger.flush()  # writes="journal": this process's calls into the tables first
    engine = create_engine(f"sqlite:///{db_path}")
    with engine.connect() as conn:
        out = {t: int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()) for t in TABLES}
    engine.dispose()
    return out


def nested(depth: int) -> list[Any]:
    """A list ``depth`` levels deep, built without recursion."""
    out: list[Any] = []
    for _ in range(depth - 1):
        out = [out]
    return out


def deep_content(depth: int) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "text", "text": "x", "data": nested(depth)}]}]


DEEP = (
    "the request is nested more than 31 levels deep (lists and objects inside each other); "
    "the ledger cannot store it (MariaDB's limit); flatten it"
)
SURROGATE = (
    "holds a lone surrogate character (U+D800) after 'hi ', which is not valid Unicode text "
    "and cannot be sent or stored; fix the text's source (e.g. decode bytes with errors='replace')"
)

CASES: list[tuple[str, dict[str, Any], type[Exception], str | re.Pattern[str]]] = [
    (
        "surrogate in content",
        {"current_messages": [{"role": "user", "content": "hi \ud800 there"}]},
        InvalidInputError,
        "messages[0]['content'] " + SURROGATE,
    ),
    (
        "surrogate in a content part",
        {
            "current_messages": [
                {"role": "user", "content": [{"type": "text", "text": "hi \ud800"}]}
            ]
        },
        InvalidInputError,
        "messages[0]['content'][0]['text'] " + SURROGATE,
    ),
    (
        "surrogate in name",
        {"current_messages": [{"role": "user", "content": "x", "name": "hi \ud800"}]},
        InvalidInputError,
        "messages[0]['name'] " + SURROGATE,
    ),
    (
        "content nested 5,000 deep",
        {"current_messages": deep_content(5000)},
        InvalidInputError,
        DEEP,
    ),
    ("content nested 40 deep", {"current_messages": deep_content(40)}, InvalidInputError, DEEP),
    (
        "model with NUL",
        {"current_messages": HI, "model": "gpt-4o\x00mini"},
        InvalidInputError,
        "model name 'gpt-4o\\x00mini' holds a NUL character (\\x00), which the ledger cannot "
        "store (PostgreSQL refuses it); remove it",
    ),
    (
        "model longer than its column",
        {"current_messages": HI, "model": "m" * 201},
        InvalidInputError,
        "model name is 201 characters long; the ledger stores at most 200 "
        f"(it starts {'m' * 60!r})",
    ),
    (
        "messages not a list",
        {"current_messages": "hello"},
        InvalidInputTypeError,
        "messages must be a list of {'role': ..., 'content': ...} dicts, got str",
    ),
    (
        "messages a single dict",
        {"current_messages": {"role": "user", "content": "hi"}},
        InvalidInputTypeError,
        "messages must be a list of {'role': ..., 'content': ...} dicts, got dict",
    ),
    (
        "messages empty",
        {"current_messages": []},
        InvalidInputError,
        "messages is empty; pass at least one {'role': 'user', 'content': ...}",
    ),
    (
        "list of non-dicts",
        {"current_messages": ["hi"]},
        InvalidInputTypeError,
        "messages[0] must be a dict with 'role' and 'content', got str",
    ),
    (
        "missing role",
        {"current_messages": [{"content": "hi"}]},
        InvalidInputError,
        f"messages[0] has role None; use one of {VALID}",
    ),
    (
        "unknown role",
        {"current_messages": [*HI, {"role": "wizard", "content": "hi"}]},
        InvalidInputError,
        f"messages[1] has role 'wizard'; use one of {VALID}",
    ),
    (
        "missing content",
        {"current_messages": [{"role": "user"}]},
        InvalidInputError,
        "messages[0] has no 'content'",
    ),
    (
        "content object()",
        {"current_messages": [{"role": "user", "content": object()}]},
        InvalidInputTypeError,
        "messages[0]['content'] must be a str or a list of content parts, got object",
    ),
    (
        "content bytes",
        {"current_messages": [{"role": "user", "content": b"hi"}]},
        InvalidInputTypeError,
        "messages[0]['content'] must be a str or a list of content parts, got bytes",
    ),
    (
        "content nan",
        {"current_messages": [{"role": "user", "content": math.nan}]},
        InvalidInputTypeError,
        "messages[0]['content'] must be a str or a list of content parts, got float",
    ),
    (
        "content part object()",
        {"current_messages": [{"role": "user", "content": [{"type": "text", "text": object()}]}]},
        InvalidInputTypeError,
        "request cannot be stored as JSON (Object of type object is not JSON serializable); "
        "pass only str, numbers, bools, None, lists and dicts",
    ),
    (
        "content part bytes",
        {"current_messages": [{"role": "user", "content": [{"type": "text", "text": b"x"}]}]},
        InvalidInputTypeError,
        "request cannot be stored as JSON (Object of type bytes is not JSON serializable); "
        "pass only str, numbers, bools, None, lists and dicts",
    ),
    (
        "content part nan",
        {"current_messages": [{"role": "user", "content": [{"type": "text", "x": math.nan}]}]},
        InvalidInputError,
        NOT_FINITE,
    ),
    (
        "content part inf",
        {"current_messages": [{"role": "user", "content": [{"type": "text", "x": math.inf}]}]},
        InvalidInputError,
        NOT_FINITE,
    ),
    (
        "extra message field bytes",
        {"current_messages": [{"role": "user", "content": "hi", "name": b"me"}]},
        InvalidInputTypeError,
        "request cannot be stored as JSON (Object of type bytes is not JSON serializable); "
        "pass only str, numbers, bools, None, lists and dicts",
    ),
    (
        "stop list holding object()",
        {"current_messages": HI, "stop": ["x", object()]},
        InvalidInputTypeError,
        "request cannot be stored as JSON (Object of type object is not JSON serializable); "
        "pass only str, numbers, bools, None, lists and dicts",
    ),
    (
        "logit_bias with -inf",
        {"current_messages": HI, "logit_bias": {"50256": -math.inf}},
        InvalidInputError,
        NOT_FINITE,
    ),
    (
        "unknown parameter",
        {"current_messages": HI, "temprature": 0},
        InvalidInputError,
        "unknown parameter 'temprature'; valid ones are: audio, frequency_penalty, logit_bias, "
        "logprobs, max_completion_tokens, max_tokens, modalities, n, parallel_tool_calls, "
        "prediction, presence_penalty, reasoning_effort, response_format, seed, stop, "
        "temperature, tool_choice, tools, top_logprobs, top_p, verbosity (and the transport "
        "settings echo, exponential_backoff_factor, max_attempts, timeout, waiting_time)",
    ),
    (
        "temperature a str",
        {"current_messages": HI, "temperature": "hot"},
        InvalidInputTypeError,
        "temperature must be float, got str",
    ),
    (
        "temperature nan",
        {"current_messages": HI, "temperature": math.nan},
        InvalidInputError,
        "temperature must be a finite number, got nan",
    ),
    (
        "top_p inf",
        {"current_messages": HI, "top_p": math.inf},
        InvalidInputError,
        "top_p must be a finite number, got inf",
    ),
    (
        "max_tokens a float",
        {"current_messages": HI, "max_tokens": 1.5},
        InvalidInputTypeError,
        "max_tokens must be int, got float",
    ),
    (
        "max_tokens a bool",
        {"current_messages": HI, "max_tokens": True},
        InvalidInputTypeError,
        "max_tokens must be an int, got bool",
    ),
    ("n zero", {"current_messages": HI, "n": 0}, InvalidInputError, "n must be at least 1, got 0"),
    (
        "seed a str",
        {"current_messages": HI, "seed": "7"},
        InvalidInputTypeError,
        "seed must be int, got str",
    ),
    (
        "response_format a str",
        {"current_messages": HI, "response_format": "json"},
        llm_ledger.ConfigError,
        "response_format must be a dict or a pydantic model class",
    ),
    (
        "empty model",
        {"current_messages": HI, "model": ""},
        InvalidInputError,
        "model name is empty; pass model='gpt-4o-mini' or set LLM_LEDGER_MODEL",
    ),
    (
        "blank model",
        {"current_messages": HI, "model": "   "},
        InvalidInputError,
        "model name is empty; pass model='gpt-4o-mini' or set LLM_LEDGER_MODEL",
    ),
    (
        "model not a str",
        {"current_messages": HI, "model": 4},
        InvalidInputTypeError,
        "model must be a str, got int",
    ),
    (
        "timeout a str",
        {"current_messages": HI, "timeout": "soon"},
        InvalidInputTypeError,
        "timeout must be a number, got str",
    ),
    (
        "negative timeout",
        {"current_messages": HI, "timeout": -1},
        InvalidInputError,
        "timeout=-1 is out of range",
    ),
    (
        "max_attempts zero",
        {"current_messages": HI, "max_attempts": 0},
        InvalidInputError,
        "max_attempts=0 is out of range",
    ),
]


@pytest.mark.parametrize("kwargs,error,message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_chat_input_is_refused_before_anything_is_sent_or_recorded(
    client, api, db_path, kwargs, error, message
) -> None:
    with pytest.raises(error) as info:
        client.send_message(**kwargs)
    if isinstance(message, re.Pattern):
        assert message.fullmatch(str(info.value)), str(info.value)
    else:
        assert str(info.value) == message
    assert isinstance(info.value, LedgerError)
    assert api.request_count == 0
    assert ledger_rows(db_path) == dict.fromkeys(TABLES, 0)


def test_input_errors_are_value_and_type_errors() -> None:
    assert issubclass(InvalidInputError, ValueError)
    assert issubclass(InvalidInputError, LedgerError)
    assert issubclass(InvalidInputTypeError, TypeError)
    assert issubclass(InvalidInputTypeError, LedgerError)


def test_bad_input_after_good_calls_adds_nothing(client, api, db_path) -> None:
    client.send_message(HI, temperature=0)
    before = ledger_rows(db_path)
    with pytest.raises(InvalidInputTypeError):
        client.send_message(HI, temperature="hot")
    assert ledger_rows(db_path) == before
    assert api.request_count == 1


EMBEDDING_CASES: list[tuple[str, Any, type[Exception], str]] = [
    ("surrogate", "hi \ud800", InvalidInputError, "input " + SURROGATE),
    ("surrogate in a list item", ["ok", "hi \ud800"], InvalidInputError, "input[1] " + SURROGATE),
    (
        "empty str",
        "",
        InvalidInputError,
        "embedding input[0] is an empty string; the API rejects it",
    ),
    (
        "empty list",
        [],
        InvalidInputTypeError,
        "embedding input must be a str or a non-empty list of str",
    ),
    (
        "bytes",
        b"x",
        InvalidInputTypeError,
        "embedding input must be a str or a non-empty list of str",
    ),
    ("list of int", ["a", 1], InvalidInputTypeError, "embedding input[1] must be a str, got int"),
    (
        "empty item",
        ["a", ""],
        InvalidInputError,
        "embedding input[1] is an empty string; the API rejects it",
    ),
]


@pytest.mark.parametrize(
    "text_input,error,message",
    [c[1:] for c in EMBEDDING_CASES],
    ids=[c[0] for c in EMBEDDING_CASES],
)
def test_bad_embedding_input_is_refused_before_anything_is_sent(
    client, api, db_path, text_input, error, message
) -> None:
    with pytest.raises(error) as info:
        client.get_embedding(text_input)
    assert str(info.value) == message
    assert api.request_count == 0
    assert ledger_rows(db_path) == dict.fromkeys(TABLES, 0)


def test_depth_limit_is_exact_whatever_the_brackets_in_strings() -> None:
    """The depth walk runs only when the JSON text has more than 31 brackets: a request at
    exactly 31 levels passes, 32 is refused, and brackets inside strings change nothing."""
    from llm_ledger.keys import chat_request

    # request { messages [ message { content [ part { data <- nested(d) -> 5 + d levels
    chat_request(deep_content(26), "gpt-4o", {})
    with pytest.raises(InvalidInputError, match=re.escape(DEEP)):
        chat_request(deep_content(27), "gpt-4o", {})
    brackets = [{"role": "user", "content": "[{" * 500}] * 20
    assert (
        chat_request(brackets, "gpt-4o", {}).request_hash
        == chat_request(brackets, "gpt-4o", {}).request_hash
    )
