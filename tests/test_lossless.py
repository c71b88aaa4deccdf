"""What the ledger stores is what was sent and answered, on every engine (issue 13, items 1, 8).

A NUL character in a message or an embedding input is stored and served back as is (the
JSON columns are ``json``, not ``jsonb``, on PostgreSQL: migration 0006); a model name the
``model`` columns cannot hold is refused before anything is sent; a real long model name
fits. A hit returns the answer's keys in the order the miss did, and the stored JSON is the
ledger's own serialisation byte for byte.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import create_engine, text

import llm_ledger
from llm_ledger import InvalidInputError, keys
from llm_ledger.store import db, spool

from .conftest import msgs


def rows(url: str, sql: str) -> list[tuple]:
    llm_ledger.flush()  # calls are written behind them (writes="journal")
    engine = create_engine(db.normalize_url(url))
    with engine.connect() as conn:
        out = [tuple(r) for r in conn.execute(text(sql))]
    engine.dispose()
    return out


def test_nul_in_content_name_and_embedding_input_is_stored_and_served_as_is(
    api, any_db: str
) -> None:
    c = llm_ledger.OpenAIClient(cache_file_name=any_db)
    message = [{"role": "user", "content": "a\x00b", "name": "n\x00"}]
    first = c.send_message(message, temperature=0)
    again = c.send_message(message, temperature=0)
    assert first["content"] == again["content"] == "answer 1 to: a\x00b"
    vector = c.get_embedding("e\x00f")
    assert c.get_embedding("e\x00f") == vector
    assert (api.chat_count, api.embedding_count) == (1, 1)
    assert rows(any_db, "SELECT cache_status, status FROM call_log ORDER BY id") == [
        ("miss", "ok"),
        ("hit", "ok"),
        ("miss", "ok"),
        ("hit", "ok"),
    ]
    assert not c.ledger.spool_path.exists()
    (stored,) = rows(any_db, "SELECT request FROM requests WHERE kind = 'chat'")
    body = stored[0] if isinstance(stored[0], dict) else json.loads(stored[0])
    assert body["messages"] == message


@pytest.mark.parametrize(
    "model",
    [
        "ft:gpt-4o-mini-2024-07-18:my-org:customer-support-v2:AbCdEf12",
        "my-azure-deployment-of-gpt-4o-mini-for-the-eu-west-region-2024-x",  # 64: Azure's max
        "m" * 200,
    ],
)
def test_real_long_model_names_fit_every_engine(api, any_db: str, model: str) -> None:
    c = llm_ledger.OpenAIClient(cache_file_name=any_db)
    assert c.send_message(msgs(), model=model, temperature=0) is not None
    assert rows(any_db, "SELECT model, status FROM call_log") == [(model, "ok")]
    assert rows(any_db, "SELECT model FROM requests") == [(model,)]
    assert not c.ledger.spool_path.exists()


def test_a_model_name_longer_than_the_column_is_refused_before_sending(api, any_db: str) -> None:
    c = llm_ledger.OpenAIClient(cache_file_name=any_db)
    with pytest.raises(InvalidInputError, match="model name is 201 characters long"):
        c.send_message(msgs(), model="m" * 201, temperature=0)
    with pytest.raises(InvalidInputError, match="model name is 201 characters long"):
        c.get_embedding("x", model="m" * 201)
    assert api.request_count == 0
    assert not spool.default_spool_path(db.normalize_url(any_db)).exists()


def test_a_hit_returns_the_answer_as_the_miss_did(api, any_db: str) -> None:
    c = llm_ledger.OpenAIClient(cache_file_name=any_db)
    miss = c.send_message(msgs(), temperature=0)
    hit = c.send_message(msgs(), temperature=0)
    assert list(hit.items()) == list(miss.items())
    assert list(miss) == ["content", "refusal", "role"]


def test_the_stored_answer_is_the_ledgers_json_byte_for_byte(api, any_db: str) -> None:
    c = llm_ledger.OpenAIClient(cache_file_name=any_db)
    c.send_message(msgs(), temperature=0)
    cast = (
        "CAST(response AS CHAR)"
        if "mysql" in db.normalize_url(any_db)
        else "CAST(response AS TEXT)"
    )
    ((stored, digest),) = rows(any_db, f"SELECT {cast}, response_hash FROM responses")
    assert keys.hash_json(stored) == digest
    assert stored == keys.canonical_json(json.loads(stored))


@pytest.mark.parametrize(
    ("scope_args", "message"),
    [
        ({"run": "r\x00"}, "run 'r\\x00' holds a NUL character"),
        ({"run": "r" * 201}, "run is 201 characters long; the ledger stores at most 200"),
        ({"template": "t" * 401}, "template is 401 characters long; the ledger stores at most 400"),
        (
            {"namespace": "n" * 192},
            "namespace is 192 characters long; the ledger stores at most 191",
        ),
        ({"tags": {"k": "v\x00"}}, "tag 'k' value 'v\\x00' holds a NUL character"),
        ({"tags": {"k": "\ud800"}}, "tag 'k' value holds a lone surrogate character (U+D800)"),
    ],
)
def test_scope_labels_the_ledger_cannot_store_are_refused_before_any_call(
    api, scope_args: dict, message: str
) -> None:
    with pytest.raises(llm_ledger.ConfigError) as info:
        with llm_ledger.scope(**scope_args):
            pass
    assert str(info.value).startswith(message)
    assert api.request_count == 0
