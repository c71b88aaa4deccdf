"""Properties of the request hash (llm_ledger.keys.chat_request), checked by hypothesis.

- Equal requests hash equal whatever the key order of messages, content parts and
  params, and whether a float parameter is written as an int or a float.
- Changing anything that changes the answer (model, a message's role or content, a
  message more, any parameter) changes the hash.
- Transport settings and None-valued parameters or message fields never enter it.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from llm_ledger.keys import CHAT_PARAMS, ROLES, TRANSPORT_PARAMS, chat_request

# The autouse fixtures of conftest only reset global state; no example depends on them.
settings.register_profile(
    "hash",
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
HASH = settings.get_profile("hash")

FLOAT_PARAMS = sorted(k for k, v in CHAT_PARAMS.items() if v == (float,))
words = st.text(max_size=12)
roles = st.sampled_from(sorted(ROLES))
models = st.text(min_size=1, max_size=16).filter(lambda s: s.strip() != "")
content_parts = st.lists(
    st.fixed_dictionaries({"type": st.just("text"), "text": words}), min_size=1, max_size=3
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": roles, "content": st.one_of(words, content_parts)},
        optional={"name": st.text(min_size=1, max_size=8)},
    ),
    min_size=1,
    max_size=4,
)
float_values = st.one_of(
    st.integers(-2, 2), st.floats(-2, 2, allow_nan=False, allow_infinity=False)
)
PARAM_VALUES: dict[str, st.SearchStrategy[Any]] = {
    **dict.fromkeys(FLOAT_PARAMS, float_values),
    "max_tokens": st.integers(1, 10**6),
    "max_completion_tokens": st.integers(1, 10**6),
    "n": st.integers(1, 8),
    "seed": st.integers(-(2**31), 2**31),
    "top_logprobs": st.integers(0, 20),
    "stop": st.lists(words, min_size=1, max_size=3),
    "logprobs": st.booleans(),
    "parallel_tool_calls": st.booleans(),
    "reasoning_effort": st.sampled_from(["minimal", "low", "medium", "high"]),
    "verbosity": st.sampled_from(["low", "medium", "high"]),
    "tool_choice": st.sampled_from(["auto", "none", "required"]),
    "logit_bias": st.dictionaries(st.from_regex(r"\A[0-9]{1,5}\Z"), st.integers(-100, 100)),
    "response_format": st.sampled_from([{"type": "text"}, {"type": "json_object"}]),
}
params_st = st.fixed_dictionaries({}, optional=PARAM_VALUES)


def h(msgs: Any, model: str, params: dict[str, Any]) -> str:
    return chat_request(msgs, model, params).request_hash


def shuffled(data: st.DataObject, value: Any) -> Any:
    """The same value with every dict's keys in a drawn order."""
    if isinstance(value, dict):
        items = data.draw(st.permutations(list(value.items())))
        return {k: shuffled(data, v) for k, v in items}
    if isinstance(value, list):
        return [shuffled(data, v) for v in value]
    return value


def same(name: str, a: Any, b: Any) -> bool:
    """Whether two values of a parameter mean the same to the API."""
    if name in FLOAT_PARAMS:
        return float(a) == float(b)
    return type(a) is type(b) and a == b


# --- equal requests, equal hashes --------------------------------------------------------


@HASH
@given(msgs=messages, model=models, params=params_st, data=st.data())
def test_key_order_never_matters(msgs, model, params, data) -> None:
    assert h(shuffled(data, msgs), model, shuffled(data, params)) == h(msgs, model, params)


@HASH
@given(
    msgs=messages,
    model=models,
    values=st.fixed_dictionaries({}, optional=dict.fromkeys(FLOAT_PARAMS, st.integers(-2, 2))),
)
def test_float_params_as_int_or_float_are_equal(msgs, model, values) -> None:
    as_float = {k: float(v) for k, v in values.items()}
    assert h(msgs, model, values) == h(msgs, model, as_float)


@HASH
@given(msgs=messages, model=models, params=params_st, stop=words)
def test_stop_as_a_string_equals_a_one_item_list(msgs, model, params, stop) -> None:
    assert h(msgs, model, {**params, "stop": stop}) == h(msgs, model, {**params, "stop": [stop]})


# --- what never enters the hash ----------------------------------------------------------

transport = st.fixed_dictionaries(
    {},
    optional=dict.fromkeys(
        sorted(TRANSPORT_PARAMS),
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5)),
    ),
)


@HASH
@given(msgs=messages, model=models, params=params_st, extra=transport)
def test_transport_settings_never_change_the_hash(msgs, model, params, extra) -> None:
    assert extra.keys() <= TRANSPORT_PARAMS
    assert h(msgs, model, {**params, **extra}) == h(msgs, model, params)


@HASH
@given(
    msgs=messages,
    model=models,
    params=params_st,
    nones=st.sets(st.sampled_from(sorted(CHAT_PARAMS))),
    data=st.data(),
)
def test_none_valued_params_and_message_fields_never_change_the_hash(
    msgs, model, params, nones, data
) -> None:
    with_none = {**params, **{k: None for k in nones if k not in params}}
    i = data.draw(st.integers(0, len(msgs) - 1))
    msgs_none = [dict(m) for m in msgs]
    msgs_none[i]["name" if "name" not in msgs_none[i] else "tool_call_id"] = None
    assert h(msgs_none, model, with_none) == h(msgs, model, params)


# --- what always does ----------------------------------------------------------------------


@HASH
@given(msgs=messages, model=models, other=models, params=params_st)
def test_another_model_changes_the_hash(msgs, model, other, params) -> None:
    assume(other != model)
    assert h(msgs, other, params) != h(msgs, model, params)


@HASH
@given(msgs=messages, model=models, params=params_st, data=st.data())
def test_another_role_changes_the_hash(msgs, model, params, data) -> None:
    i = data.draw(st.integers(0, len(msgs) - 1))
    role = data.draw(roles.filter(lambda r: r != msgs[i]["role"]))
    changed = [dict(m) for m in msgs]
    changed[i]["role"] = role
    assert h(changed, model, params) != h(msgs, model, params)


@HASH
@given(msgs=messages, model=models, params=params_st, data=st.data())
def test_other_content_changes_the_hash(msgs, model, params, data) -> None:
    i = data.draw(st.integers(0, len(msgs) - 1))
    content = data.draw(words.filter(lambda c: c != msgs[i]["content"]))
    changed = [dict(m) for m in msgs]
    changed[i]["content"] = content
    assert h(changed, model, params) != h(msgs, model, params)


@HASH
@given(msgs=messages, model=models, params=params_st, extra=messages)
def test_more_messages_change_the_hash(msgs, model, params, extra) -> None:
    assert h(msgs + extra, model, params) != h(msgs, model, params)


@pytest.mark.parametrize("name", sorted(PARAM_VALUES))
@settings(HASH, max_examples=40)
@given(msgs=messages, model=models, params=params_st, data=st.data())
def test_each_param_changed_or_added_changes_the_hash(msgs, model, params, data, name) -> None:
    value = data.draw(PARAM_VALUES[name])
    assume(name not in params or not same(name, params[name], value))
    assert h(msgs, model, {**params, name: value}) != h(msgs, model, params)


def test_every_chat_param_but_structured_ones_has_a_strategy() -> None:
    """New parameters get a strategy here, or a reason to be left out."""
    no_strategy = {"tools", "modalities", "audio", "prediction"}
    assert set(PARAM_VALUES) == set(CHAT_PARAMS) - no_strategy
