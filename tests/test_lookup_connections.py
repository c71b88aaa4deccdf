"""A lookup on a server database is one statement outside a transaction (no BEGIN /
ROLLBACK round trips): on the thread's own lookup connection (up to LOOKUP_CONNECTIONS
threads), else on a pooled one. PostgreSQL and MariaDB."""

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
    """On a pooled connection: every thread beyond LOOKUP_CONNECTIONS (here all)."""
    monkeypatch.setattr(connections, "LOOKUP_CONNECTIONS", 0)
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


@pytest.fixture(params=["postgresql", "mariadb"])
def server_url(request: pytest.FixtureRequest) -> str:
    name = request.param
    return request.getfixturevalue("pg_url" if name == "postgresql" else "mysql_url")


def _backend(hot: connections.Hot) -> int:
    """The server's id of the connection (PostgreSQL backend pid, MariaDB thread id)."""
    info = getattr(hot.conn, "info", None)
    return int(info.backend_pid) if info is not None else int(hot.conn.thread_id())


def _kill(ledger, backend: int) -> None:  # type: ignore[no-untyped-def]
    with ledger.engine.connect() as conn:
        if ledger.dialect == "postgresql":
            assert conn.execute(text(f"SELECT pg_terminate_backend({backend})")).scalar() is True
        else:
            conn.execute(text(f"KILL {backend}"))


def _one_answer(url: str) -> tuple[OpenAIClient, str, str]:
    client = OpenAIClient(cache_file_name=url)
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
    server_url: str, api: FakeOpenAIServer
) -> None:
    client, ns, h = _one_answer(server_url)
    ledger = client.ledger
    found: list[bool] = []
    held: list[int] = []
    together = threading.Barrier(connections.LOOKUP_CONNECTIONS + 3)

    def look() -> None:
        found.append(ledger.lookup(ns, h) is not None)
        together.wait(30)  # every thread alive at once: none of their connections goes
        held.append(len(ledger.conns.readers))
        together.wait(30)

    threads = [threading.Thread(target=look) for _ in range(connections.LOOKUP_CONNECTIONS + 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert found == [True] * (connections.LOOKUP_CONNECTIONS + 3)
    assert held == [connections.LOOKUP_CONNECTIONS] * (connections.LOOKUP_CONNECTIONS + 3)
    with ledger.engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1  # the pool still has room


def test_a_lost_lookup_connection_is_replaced_and_the_hit_still_served(
    server_url: str, api: FakeOpenAIServer
) -> None:
    client, ns, h = _one_answer(server_url)
    ledger = client.ledger
    assert client.send_message(msgs("look me up"), temperature=0.0)  # a hit: opens it
    (hot,) = ledger.conns.readers
    backend = _backend(hot)
    _kill(ledger, backend)
    with capture_logs() as logs:
        assert client.send_message(msgs("look me up"), temperature=0.0)  # from the pool
    assert api.chat_count == 1  # still a hit: no API call
    assert [e["log_level"] for e in logs] == []  # below the default level: nothing to see
    assert client.send_message(msgs("look me up"), temperature=0.0)
    (again,) = ledger.conns.readers
    assert again is not hot and _backend(again) != backend
    assert api.chat_count == 1


def test_a_forked_child_looks_up_on_its_own_connection_and_the_parent_keeps_its_own(
    server_url: str, api: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a cap of 1, held by the parent: the parent's connection does not count in the child."""
    monkeypatch.setattr(connections, "LOOKUP_CONNECTIONS", 1)
    client, ns, h = _one_answer(server_url)
    ledger = client.ledger
    assert ledger.lookup(ns, h) is not None
    (hot,) = ledger.conns.readers
    parent_backend = _backend(hot)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: the same Ledger object, its own connection
        code = 1
        try:
            ok = ledger.lookup(ns, h) is not None
            mine = [x for x in ledger.conns.readers if x.pid == os.getpid()]
            code = 0 if ok and len(mine) == 1 and _backend(mine[0]) != parent_backend else 3
        finally:
            os.write(write, bytes([code]))
            os._exit(code)
    os.close(write)
    _, status = os.waitpid(child, 0)
    assert os.read(read, 1) == b"\x00" and os.waitstatus_to_exitcode(status) == 0
    os.close(read)
    assert ledger.lookup(ns, h) is not None  # the parent's connection was not disturbed
    assert _backend(hot) == parent_backend and set(ledger.conns.readers) == {hot}


def test_a_mariadb_lookup_connection_is_in_autocommit_and_sees_new_rows(
    mysql_url: str, api: FakeOpenAIServer
) -> None:
    """Autocommit: each lookup sees what other connections committed since (no snapshot
    of REPEATABLE READ held between calls)."""
    client, ns, h = _one_answer(mysql_url)
    ledger = client.ledger
    assert ledger.lookup(ns, h) is not None
    (hot,) = ledger.conns.readers
    assert hot.conn.get_autocommit() is True
    client.send_message(msgs("written later"), temperature=0.0)
    client.ledger.flush()
    with ledger.engine.connect() as conn:
        (later,) = conn.execute(
            text("SELECT request_hash FROM cache_entries WHERE request_hash <> :h"), {"h": h}
        ).one()
    assert ledger.lookup(ns, later) is not None  # the same connection, a newer row
    assert set(ledger.conns.readers) == {hot}
