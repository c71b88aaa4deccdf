"""The raw-DBAPI layer: the audit row mapped once from CallRecord, values as the models' types."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

import llm_ledger
from llm_ledger.records import CallRecord, Usage
from llm_ledger.store import statements
from llm_ledger.store.models import CallLog, read_money

NOW = datetime(2026, 5, 1, 12, 0, 0, 250000)


def record(**changes: object) -> CallRecord:
    fields: dict[str, object] = dict(
        call_uuid="00000000-0000-4000-8000-000000000001",
        created_at=NOW,
        kind="chat",
        api_type="openai",
        endpoint_host="api.example:443",
        model="gpt-4o-mini",
        namespace="ns",
        request_hash="a" * 64,
        request={"kind": "chat", "model": "gpt-4o-mini", "messages": []},
        cache_status="miss",
        status="error",
        library_version="9.9",
        slot=2,
        attempts=3,
        latency_ms=12.5,
        usage=Usage(1, 2, 3, 4, 5, estimated=True),
        error_type="RateLimitError",
        error_message="slow down",
        cost_usd=None,
        run="r",
        template="t.mustache",
        tags={"team": "a"},
        stream_status="error",
        first_chunk_ms=4.5,
        chunks=2,
    )
    return CallRecord(**{**fields, **changes})  # type: ignore[arg-type]


def test_every_call_log_column_comes_from_the_record() -> None:
    row = statements.call_log_row(record(), response_id=None)
    assert list(row) == [c.name for c in CallLog.__table__.columns if c.name != "id"]
    assert row == {
        "call_uuid": "00000000-0000-4000-8000-000000000001",
        "created_at": NOW,
        "kind": "chat",
        "api_type": "openai",
        "endpoint_host": "api.example:443",
        "model": "gpt-4o-mini",
        "namespace": "ns",
        "request_hash": "a" * 64,
        "slot": 2,
        "response_id": None,
        "cache_status": "miss",
        "status": "error",
        "attempts": 3,
        "latency_ms": 12.5,
        "prompt_tokens": 1,
        "completion_tokens": 2,
        "cached_tokens": 3,
        "reasoning_tokens": 4,
        "total_tokens": 5,
        "tokens_estimated": True,
        "items_total": None,
        "items_hit": None,
        "error_type": "RateLimitError",
        "error_message": "slow down",
        "cost_usd": None,
        "saved_usd": None,
        "cost_note": None,
        "price_version": None,
        "run": "r",
        "template": "t.mustache",
        "tags": {"team": "a"},
        "library_version": "9.9",
        "stream_status": "error",
        "first_chunk_ms": 4.5,
        "chunks": 2,
    }


def test_a_column_without_a_source_on_the_record_fails_at_import_naming_it() -> None:
    with pytest.raises(ImportError) as err:
        statements._source("prompt_text")
    assert str(err.value) == (
        "call_log.prompt_text has no source on CallRecord: add a field 'prompt_text' to "
        "llm_ledger.records.CallRecord (or map it in statements.CALL_LOG_SOURCES)"
    )


def test_no_tags_are_null_not_an_empty_object() -> None:
    assert statements.call_log_row(record(tags={}), response_id=None)["tags"] is None


def test_the_repository_writes_the_mapped_row_on_every_engine(any_db: str) -> None:
    ledger = llm_ledger.Ledger(any_db)
    try:
        ledger.record(record())
        with ledger.engine.connect() as conn:
            stored = dict(conn.execute(select(CallLog.__table__)).mappings().one())
    finally:
        ledger.close()
    del stored["id"]
    assert stored == statements.call_log_row(record(), response_id=None)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, None),
        (5.25e-06, Decimal("0.00000525")),
        (0.1 + 0.2, Decimal("0.3")),
        (Decimal("0E-10"), Decimal("0")),
        (Decimal("1.2500000000"), Decimal("1.2500000000")),
    ],
)
def test_one_money_reader_for_every_driver(raw: object, expected: Decimal | None) -> None:
    assert read_money(raw) == expected
    if expected is not None:
        assert str(read_money(raw)) == str(expected)


def test_json_values_written_as_canonical_text(tmp_path: Path) -> None:
    convert = statements._json_text
    assert convert({"b": 1, "a": "é"}) == '{"a":"é","b":1}'
    assert convert('{"already":"text"}') == '{"already":"text"}'
    assert convert(statements.Dumped("[1]")) == "[1]"
    assert convert(None) is None
