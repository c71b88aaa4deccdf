"""connections.begin_write: a writer waits for SQLite's write lock in short sleeps (SQLite's
own busy handler sleeps 1, 2, 5 ... 100 ms), for the same timeout, then fails as before."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from llm_ledger.store import connections


@pytest.fixture
def two(tmp_path: Path):
    path = tmp_path / "w.db"
    a = sqlite3.connect(path, timeout=30, check_same_thread=False)
    a.execute("PRAGMA journal_mode = WAL")
    a.execute("CREATE TABLE t (x INTEGER)")
    a.commit()
    b = sqlite3.connect(path, timeout=30)
    yield a, b
    a.close()
    b.close()


def test_it_polls_in_short_sleeps_until_the_lock_is_free(two, monkeypatch) -> None:
    holder, writer = two
    holder.execute("BEGIN IMMEDIATE")
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 7:
            holder.rollback()  # the other writer is done

    monkeypatch.setattr(connections.time, "sleep", sleep)
    connections.begin_write(writer, 30_000)

    assert waits == [0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.002, 0.002]
    writer.execute("INSERT INTO t VALUES (1)")
    writer.commit()
    assert writer.execute("PRAGMA busy_timeout").fetchone() == (30_000,)  # as it was


def test_it_gives_up_after_the_timeout_with_sqlites_error(two) -> None:
    holder, writer = two
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        connections.begin_write(writer, 50)
    assert writer.execute("PRAGMA busy_timeout").fetchone() == (50,)
    assert not writer.in_transaction
    holder.rollback()


def test_another_error_is_raised_at_once(two, monkeypatch) -> None:
    _, writer = two
    writer.execute("BEGIN")
    monkeypatch.setattr(connections.time, "sleep", pytest.fail)
    with pytest.raises(sqlite3.OperationalError, match="within a transaction"):
        connections.begin_write(writer, 30_000)


def test_a_writer_released_by_another_thread_gets_the_lock(two) -> None:
    holder, writer = two
    holder.execute("BEGIN IMMEDIATE")
    threading.Timer(0.05, holder.rollback).start()
    connections.begin_write(writer, 30_000)
    assert writer.in_transaction
    writer.rollback()
