"""What enters the request hash, and what does not."""

from __future__ import annotations

import hashlib

import pytest

from llm_ledger.keys import CHAT_PARAMS, chat_request, embedding_request

MSGS = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
BASE = {"temperature": 0.5, "max_tokens": 100, "top_p": 1.0}


def h(messages=MSGS, model="gpt-4o-mini", **params) -> str:
    return chat_request(messages, model, {**BASE, **params}).request_hash


def test_key_order_does_not_matter() -> None:
    reordered = [{"content": m["content"], "role": m["role"]} for m in MSGS]
    a = chat_request(MSGS, "gpt-4o-mini", {"temperature": 0.5, "max_tokens": 100})
    b = chat_request(reordered, "gpt-4o-mini", {"max_tokens": 100, "temperature": 0.5})
    assert a.request_hash == b.request_hash


def test_none_params_and_none_message_fields_do_not_count() -> None:
    with_none = [{**MSGS[0], "name": None}, MSGS[1]]
    assert h() == h(messages=with_none, seed=None, stop=None, response_format=None)


@pytest.mark.parametrize(
    "transport",
    [
        {"timeout": 5},
        {"max_attempts": 9},
        {"waiting_time": 3},
        {"exponential_backoff_factor": 7},
        {"echo": True},
    ],
)
def test_transport_params_do_not_count(transport: dict) -> None:
    assert h() == h(**transport)


def test_int_and_float_forms_of_a_float_param_are_equal() -> None:
    assert h(temperature=1) == h(temperature=1.0)


def test_stop_string_equals_single_item_list() -> None:
    assert h(stop="END") == h(stop=["END"])


SEMANTIC_CHANGES = {
    "temperature": 0.9,
    "max_tokens": 101,
    "max_completion_tokens": 50,
    "top_p": 0.5,
    "frequency_penalty": 0.1,
    "presence_penalty": 0.1,
    "stop": ["X"],
    "n": 2,
    "seed": 42,
    "response_format": {"type": "json_object"},
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
    "tool_choice": "auto",
    "parallel_tool_calls": False,
    "logit_bias": {"50256": -100},
    "logprobs": True,
    "top_logprobs": 2,
    "reasoning_effort": "low",
    "verbosity": "low",
    "modalities": ["text"],
    "audio": {"voice": "alloy", "format": "wav"},
    "prediction": {"type": "content", "content": "x"},
}


def test_every_semantic_param_is_listed_for_sensitivity() -> None:
    assert set(SEMANTIC_CHANGES) == set(CHAT_PARAMS)


@pytest.mark.parametrize(("name", "value"), sorted(SEMANTIC_CHANGES.items()))
def test_each_semantic_param_changes_the_hash(name: str, value: object) -> None:
    assert h() != h(**{name: value})


def test_model_messages_and_roles_change_the_hash() -> None:
    assert h() != h(model="gpt-4o")
    assert h() != h(messages=[MSGS[0], {"role": "user", "content": "hi!"}])
    assert h() != h(messages=[MSGS[0], {"role": "assistant", "content": "hi"}])


def test_embedding_hash_depends_on_text_model_and_dimensions() -> None:
    base = embedding_request("abc", "text-embedding-3-small").request_hash
    assert (
        base
        == embedding_request("abc", "text-embedding-3-small", {"dimensions": None}).request_hash
    )
    assert base != embedding_request("abd", "text-embedding-3-small").request_hash
    assert base != embedding_request("abc", "text-embedding-3-large").request_hash
    assert (
        base != embedding_request("abc", "text-embedding-3-small", {"dimensions": 4}).request_hash
    )


def test_chat_and_embedding_hashes_never_collide_on_the_same_text() -> None:
    chat = chat_request([{"role": "user", "content": "abc"}], "m", {}).request_hash
    assert chat != embedding_request("abc", "m").request_hash


def test_canonical_body_is_documented_shape() -> None:
    r = chat_request([{"role": "user", "content": "hi"}], "m", {"temperature": 1, "timeout": 3})
    assert r.canonical_json == (
        '{"kind":"chat","messages":[{"content":"hi","role":"user"}],"model":"m","params":{"temperature":1.0}}'
    )
    assert r.request_hash == hashlib.sha256(r.canonical_json.encode()).hexdigest()
    assert r.request_hash == "08906094de9e0b6685f772750a9c12a8c78e98b187b2fa91538e29877fc2d669"
