"""A PostgreSQL lookup is one statement outside a transaction (no BEGIN / ROLLBACK round
trips): on the thread's own lookup connection (up to PG_LOOKUP_CONNECTIONS threads), else
on a pooled one."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from sqlalchemy import text
from structlog.testing import capture_logs

from llm_ledger import OpenAIClient, open_ledger
from llm_ledger.store import connections
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
    pg_url: str, api: FakeOpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a pooled connection: every thread beyond PG_LOOKUP_CONNECTIONS (here all)."""
    monkeypatch.setattr(connections, "PG_LOOKUP_CONNECTIONS", 0)
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


def _one_answer(pg_url: str) -> tuple[OpenAIClient, str, str]:
    client = OpenAIClient(cache_file_name=pg_url)
    client.send_message(msgs("look me up"), temperature=0.0)
    client.ledger.flush()
    with client.ledger.engine.connect() as conn:
        ns, h = conn.execute(text("SELECT namespace, request_hash FROM cache_entries")).one()
    return client, ns, h


def test_a_thread_looks_up_on_its_own_connection_without_a_transaction(
    pg_url: str, api: FakeOpenAIServer, tmp_path: Path
) -> None:
    client, ns, h = _one_answer(pg_url)
    ledger = client.ledger
    assert ledger.lookup(ns, h) is not None
    (hot,) = ledger.conns.readers
    assert hot.conn.autocommit is True
    trace = tmp_path / "trace.txt"
    fd = os.open(trace, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        hot.conn.pgconn.trace(fd)
        assert ledger.lookup(ns, h) is not None
        assert ledger.lookup(ns, "0" * 64) is None
        hot.conn.pgconn.untrace()
    finally:
        os.close(fd)
    sent = trace.read_bytes()
    assert sent.count(b"cache_entries") + sent.count(b'"Bind"') >= 2  # both lookups went here
    assert b"BEGIN" not in sent and b"ROLLBACK" not in sent
    assert set(ledger.conns.readers) == {hot}  # the same connection each time


def test_lookup_connections_stop_at_the_cap_and_the_rest_use_the_pool(
    pg_url: str, api: FakeOpenAIServer
) -> None:
    client, ns, h = _one_answer(pg_url)
    ledger = client.ledger
    found: list[bool] = []
    held: list[int] = []
    together = threading.Barrier(connections.PG_LOOKUP_CONNECTIONS + 3)

    def look() -> None:
        found.append(ledger.lookup(ns, h) is not None)
        together.wait(30)  # every thread alive at once: none of their connections goes
        held.append(len(ledger.conns.readers))
        together.wait(30)

    threads = [threading.Thread(target=look) for _ in range(connections.PG_LOOKUP_CONNECTIONS + 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert found == [True] * (connections.PG_LOOKUP_CONNECTIONS + 3)
    assert held == [connections.PG_LOOKUP_CONNECTIONS] * (connections.PG_LOOKUP_CONNECTIONS + 3)
    with ledger.engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1  # the pool still has room


def test_a_lost_lookup_connection_is_replaced_and_the_hit_still_served(
    pg_url: str, api: FakeOpenAIServer
) -> None:
    client, ns, h = _one_answer(pg_url)
    ledger = client.ledger
    assert client.send_message(msgs("look me up"), temperature=0.0)  # a hit: opens it
    (hot,) = ledger.conns.readers
    pid = hot.conn.info.backend_pid
    with ledger.engine.connect() as conn:
        assert conn.execute(text(f"SELECT pg_terminate_backend({pid})")).scalar() is True
    with capture_logs() as logs:
        assert client.send_message(msgs("look me up"), temperature=0.0)  # from the pool
    assert api.chat_count == 1  # still a hit: no API call
    assert [e["log_level"] for e in logs] == []  # below the default level: nothing to see
    assert client.send_message(msgs("look me up"), temperature=0.0)
    (again,) = ledger.conns.readers
    assert again is not hot and again.conn.info.backend_pid != pid
    assert api.chat_count == 1


def test_a_forked_child_looks_up_on_its_own_connection_and_the_parent_keeps_its_own(
    pg_url: str, api: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a cap of 1, held by the parent: the parent's connection does not count in the child."""
    monkeypatch.setattr(connections, "PG_LOOKUP_CONNECTIONS", 1)
    client, ns, h = _one_answer(pg_url)
    ledger = client.ledger
    assert ledger.lookup(ns, h) is not None
    (hot,) = ledger.conns.readers
    parent_backend = hot.conn.info.backend_pid
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: the same Ledger object, its own connection
        code = 1
        try:
            ok = ledger.lookup(ns, h) is not None
            mine = [x for x in ledger.conns.readers if x.pid == os.getpid()]
            code = (
                0
                if ok and len(mine) == 1 and mine[0].conn.info.backend_pid != parent_backend
                else 3
            )
        finally:
            os.write(write, bytes([code]))
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(child, 0)
    assert os.read(read, 1) == b"\x00" and os.waitstatus_to_exitcode(status) == 0
    os.close(read)
    assert ledger.lookup(ns, h) is not None  # the parent's connection was not disturbed
    assert hot.conn.info.backend_pid == parent_backend and set(ledger.conns.readers) == {hot}
