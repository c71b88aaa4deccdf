"""A PostgreSQL lookup is one statement outside a transaction (no BEGIN / ROLLBACK round trips)."""

from __future__ import annotations

import os
from pathlib import Path

from llm_ledger import OpenAIClient, open_ledger
from llm_ledger.testing import FakeOpenAIServer

from .conftest import msgs


def traced_lookup(pg_url: str, tmp_path: Path, namespace: str, request_hash: str) -> bytes:
    """The libpq protocol trace of one ``Ledger.lookup``, on the pool's only connection."""
    ledger = open_ledger(pg_url)
    ledger.engine.dispose()
    conn = ledger.engine.raw_connection()  # the pool's one connection, checked in again below
    trace = tmp_path / "trace.txt"
    fd = os.open(trace, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        conn.driver_connection.pgconn.trace(fd)
        conn.close()
        found = ledger.lookup(namespace, request_hash)
        again = ledger.engine.raw_connection()
        again.driver_connection.pgconn.untrace()
        assert again.driver_connection.autocommit is False  # returned to the pool as it was
        again.close()
    finally:
        os.close(fd)
    assert found is not None
    return trace.read_bytes()


def test_postgresql_lookup_sends_its_select_alone(
    pg_url: str, api: FakeOpenAIServer, tmp_path: Path
) -> None:
    client = OpenAIClient(cache_file_name=pg_url)
    client.send_message(msgs("look me up"), temperature=0.0)
    client.ledger.flush()  # writes="journal": in the table, for the traced lookup to find
    [(namespace, request_hash)] = (
        client.ledger.engine.raw_connection()
        .cursor()
        .execute("SELECT namespace, request_hash FROM cache_entries")
        .fetchall()
    )
    trace = traced_lookup(pg_url, tmp_path, namespace, request_hash)
    assert b"SELECT" in trace
    assert b"BEGIN" not in trace
    assert b"ROLLBACK" not in trace
    assert client.send_message(msgs("look me up"), temperature=0.0)  # the hit still works
    assert api.chat_count == 1
