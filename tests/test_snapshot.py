"""A whole-database snapshot of a miss, a hit and a refusal, with the clock frozen (hishel's pattern).

Every table is dumped as SQLite stores it. What a frozen clock cannot fix is replaced by
stable tokens: each call's random uuid (numbered in order), its measured latency, and the
local test server's port.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import time_machine

import llm_ledger
from llm_ledger.store.models import TABLES
from llm_ledger.testing import FakeOpenAIServer

from .conftest import msgs

NOW = datetime(2026, 5, 1, 12, 30, 0)


def dump(path: Path) -> dict[str, list[dict[str, Any]]]:
    llm_ledger.flush()  # calls are written behind them (writes="journal")
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    uuids: dict[str, str] = {}
    out: dict[str, list[dict[str, Any]]] = {}
    try:
        for table in TABLES:
            rows = [dict(r) for r in conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2")]
            for row in rows:
                if "call_uuid" in row:
                    row["call_uuid"] = uuids.setdefault(
                        row["call_uuid"], f"<uuid {len(uuids) + 1}>"
                    )
                if row.get("latency_ms") is not None:
                    row["latency_ms"] = "<ms>"
                if row.get("endpoint_host") is not None:
                    row["endpoint_host"] = "<host>"
                if row.get("library_version") is not None:
                    row["library_version"] = "<version>"
            out[table] = rows
    finally:
        conn.close()
    return out


@pytest.fixture
def ledger_after_three_calls(api: FakeOpenAIServer, db_path: Path) -> Path:
    with time_machine.travel(NOW, tick=False):
        client = llm_ledger.OpenAIClient(cache_file_name=str(db_path), sleep=lambda s: None)
        client.send_message(msgs("What is a ledger?"), temperature=0)  # miss: paid, stored
        client.send_message(msgs("What is a ledger?"), temperature=0)  # hit: served
        with llm_ledger.scope(run="r1", tags={"team": "a"}, max_cost_usd="0.0000000001"):
            with pytest.raises(llm_ledger.BudgetExceededError):
                client.send_message(msgs("Too costly"), temperature=0)  # refused
        llm_ledger.store.repository.close_all()  # every row written, the WAL checkpointed
    return db_path


def test_a_miss_a_hit_and_a_refusal_write_exactly_these_rows(
    ledger_after_three_calls: Path,
) -> None:
    assert dump(ledger_after_three_calls) == SNAPSHOT


SNAPSHOT: dict[str, list[dict[str, Any]]] = {
    "requests": [
        {
            "request_hash": "f62d543bc50fb52cdf6a890e667f316b36b662bbb6e7caca6510748c95706066",
            "kind": "chat",
            "model": "gpt-4o-mini",
            "request": '{"kind":"chat","messages":[{"content":"What is a '
            'ledger?","role":"user"}],"model":"gpt-4o-mini","params":{"frequency_penalty":0.0,"max_tokens":1024,"presence_penalty":0.0,"temperature":0.0,"top_p":1.0}}',
            "created_at": "2026-05-01 12:30:00.000000",
        },
        {
            "request_hash": "fe18756636eb18b96417af78f7c4713ab3b0333fb834994fa2947cb906245dae",
            "kind": "chat",
            "model": "gpt-4o-mini",
            "request": '{"kind":"chat","messages":[{"content":"Too '
            'costly","role":"user"}],"model":"gpt-4o-mini","params":{"frequency_penalty":0.0,"max_tokens":1024,"presence_penalty":0.0,"temperature":0.0,"top_p":1.0}}',
            "created_at": "2026-05-01 12:30:00.000000",
        },
    ],
    "responses": [
        {
            "id": 1,
            "request_hash": "f62d543bc50fb52cdf6a890e667f316b36b662bbb6e7caca6510748c95706066",
            "response_hash": "f7766fec597c84d89c19f8464623c33ffeba2390fabef59ab9e4ea143d0cfc6c",
            "response": '{"choices":[{"finish_reason":"stop","index":0,"logprobs":null,"message":{"content":"answer '
            "1 to: What is a "
            'ledger?","refusal":null,"role":"assistant"}}],"created":1700000000,"id":"chatcmpl-1","model":"gpt-4o-mini","object":"chat.completion","system_fingerprint":"fp_test","usage":{"completion_tokens":7,"completion_tokens_details":{"reasoning_tokens":0},"prompt_tokens":7,"prompt_tokens_details":{"cached_tokens":0},"total_tokens":14}}',
            "prompt_tokens": 7,
            "completion_tokens": 7,
            "cached_tokens": 0,
            "reasoning_tokens": 0,
            "total_tokens": 14,
            "tokens_estimated": 0,
            "cost_usd": 5.25e-06,
            "cost_note": None,
            "price_version": "genai-prices 0.2.3",
            "created_at": "2026-05-01 12:30:00.000000",
        }
    ],
    "cache_entries": [
        {
            "id": 1,
            "namespace": "",
            "request_hash": "f62d543bc50fb52cdf6a890e667f316b36b662bbb6e7caca6510748c95706066",
            "slot": 0,
            "response_id": 1,
            "created_at": "2026-05-01 12:30:00.000000",
            "updated_at": "2026-05-01 12:30:00.000000",
        }
    ],
    "call_log": [
        {
            "id": 1,
            "call_uuid": "<uuid 1>",
            "created_at": "2026-05-01 12:30:00.000000",
            "kind": "chat",
            "api_type": "openai",
            "endpoint_host": "<host>",
            "model": "gpt-4o-mini",
            "namespace": "",
            "request_hash": "f62d543bc50fb52cdf6a890e667f316b36b662bbb6e7caca6510748c95706066",
            "slot": 0,
            "response_id": 1,
            "cache_status": "miss",
            "status": "ok",
            "attempts": 1,
            "latency_ms": "<ms>",
            "prompt_tokens": 7,
            "completion_tokens": 7,
            "cached_tokens": 0,
            "reasoning_tokens": 0,
            "total_tokens": 14,
            "tokens_estimated": 0,
            "items_total": None,
            "items_hit": None,
            "error_type": None,
            "error_message": None,
            "cost_usd": 5.25e-06,
            "saved_usd": None,
            "cost_note": None,
            "price_version": "genai-prices 0.2.3",
            "run": None,
            "template": None,
            "tags": None,
            "library_version": "<version>",
            "stream_status": None,
            "first_chunk_ms": None,
            "chunks": None,
        },
        {
            "id": 2,
            "call_uuid": "<uuid 2>",
            "created_at": "2026-05-01 12:30:00.000000",
            "kind": "chat",
            "api_type": "openai",
            "endpoint_host": "<host>",
            "model": "gpt-4o-mini",
            "namespace": "",
            "request_hash": "f62d543bc50fb52cdf6a890e667f316b36b662bbb6e7caca6510748c95706066",
            "slot": 0,
            "response_id": 1,
            "cache_status": "hit",
            "status": "ok",
            "attempts": 0,
            "latency_ms": "<ms>",
            "prompt_tokens": 7,
            "completion_tokens": 7,
            "cached_tokens": 0,
            "reasoning_tokens": 0,
            "total_tokens": 14,
            "tokens_estimated": 0,
            "items_total": None,
            "items_hit": None,
            "error_type": None,
            "error_message": None,
            "cost_usd": 0,
            "saved_usd": 5.25e-06,
            "cost_note": None,
            "price_version": None,
            "run": None,
            "template": None,
            "tags": None,
            "library_version": "<version>",
            "stream_status": None,
            "first_chunk_ms": None,
            "chunks": None,
        },
        {
            "id": 3,
            "call_uuid": "<uuid 3>",
            "created_at": "2026-05-01 12:30:00.000000",
            "kind": "chat",
            "api_type": "openai",
            "endpoint_host": "<host>",
            "model": "gpt-4o-mini",
            "namespace": "",
            "request_hash": "fe18756636eb18b96417af78f7c4713ab3b0333fb834994fa2947cb906245dae",
            "slot": 0,
            "response_id": None,
            "cache_status": "miss",
            "status": "refused",
            "attempts": 0,
            "latency_ms": None,
            "prompt_tokens": None,
            "completion_tokens": None,
            "cached_tokens": None,
            "reasoning_tokens": None,
            "total_tokens": None,
            "tokens_estimated": 0,
            "items_total": None,
            "items_hit": None,
            "error_type": "BudgetExceededError",
            "error_message": "budget exceeded: spent $0 of $0.0000000001, and this call to "
            "'gpt-4o-mini' could cost up to $0.00061575; raise "
            "max_cost_usd or lower max_tokens",
            "cost_usd": 0,
            "saved_usd": None,
            "cost_note": None,
            "price_version": None,
            "run": "r1",
            "template": None,
            "tags": '{"team":"a"}',
            "library_version": "<version>",
            "stream_status": None,
            "first_chunk_ms": None,
            "chunks": None,
        },
    ],
    "call_tags": [{"call_id": 3, "name": "team", "value": "a"}],
}
