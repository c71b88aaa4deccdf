"""A file SQLite ledger: one connection per thread, WAL checkpoints in the background."""

from __future__ import annotations

import gc
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

import llm_ledger
from llm_ledger.store import checkpoint, repository

from .conftest import msgs, wait_for

# Checkpoints after the calling thread's own commits (writes="sync"); with the default
# journal the writer thread commits, on its own connection, the same way.
pytestmark = pytest.mark.usefixtures("sync_writes")


def _wal_frames(path: Path) -> tuple[int, int]:
    """(frames in the WAL, frames of it already copied into the database)."""
    llm_ledger.flush()  # writes="journal": this process's calls into the tables first
    conn = sqlite3.connect(path)
    try:
        busy, log, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    finally:
        conn.close()
    assert busy == 0
    return log, done


def test_calls_checkpoint_the_wal_off_the_calling_thread(client, api, db_path) -> None:
    for i in range(30):
        assert client.send_message(msgs(f"q{i}"), temperature=0) is not None
    ledger = client.ledger
    hot = ledger.conns.own().conn
    assert hot.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
    with ledger.engine.connect() as conn:  # reports, imports, migrations keep SQLite's default
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").fetchone() == (1000,)
    cp = ledger.checkpointer
    assert isinstance(cp, checkpoint.Checkpointer)
    assert wait_for(lambda: cp.checkpoints >= 1)
    assert cp._thread is not None and cp._thread.name.startswith("llm-ledger-checkpoint")
    assert cp._thread is not threading.current_thread()
    # Settled: one more checkpoint after the last write has copied every frame.
    n = cp.checkpoints
    client.send_message(msgs("last"), temperature=0)
    assert wait_for(lambda: cp.checkpoints > n)
    log, done = _wal_frames(db_path)
    assert log == done


def test_closing_stops_the_thread_and_leaves_the_wal_checkpointed(client, api, db_path) -> None:
    for i in range(10):
        client.send_message(msgs(f"q{i}"), temperature=0)
    ledger = client.ledger
    thread = ledger.checkpointer._thread
    assert thread is not None and thread.is_alive()
    repository.close_all()
    assert not thread.is_alive()
    assert ledger.checkpointer._thread is None
    # Every connection is closed: SQLite checkpointed the WAL and removed it.
    assert not db_path.with_name(db_path.name + "-wal").exists()
    # Used again after close: the stored answer, a new connection and a new thread.
    before = api.request_count
    client.send_message(msgs("q0"), temperature=0)
    assert api.request_count == before
    assert client.ledger.checkpointer._thread is not None


def test_each_thread_has_its_own_connection_closed_with_the_thread(client, api) -> None:
    client.send_message(msgs("warm"), temperature=0)
    ledger = client.ledger
    # The connections themselves, kept: a finished thread's connection is closed and freed,
    # and a later one could get its id() (this test once saw 3 ids for 4 threads).
    seen: dict[str, Any] = {}

    def work(name: str) -> None:
        client.send_message(msgs("warm"), temperature=0)  # a hit, on this thread's connection
        seen[name] = ledger.conns.own().conn
        assert ledger.conns.own() is ledger.conns.own()

    threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(conn) for conn in seen.values()}) == 4
    assert id(ledger.conns.own().conn) not in {id(conn) for conn in seen.values()}
    del threads
    gc.collect()
    assert len(ledger.conns.all) == 1  # only this thread's: the others went with their threads


def test_a_failed_write_rolls_back_and_the_connection_stays_usable(client, api, db_path) -> None:
    client.send_message(msgs("a"), temperature=0)
    ledger = client.ledger
    conn = ledger.conns.own().conn
    try:
        with ledger._transaction() as cur:
            cur.execute("INSERT INTO call_tags (call_id, name, value) VALUES (1, 'k', 'v')")
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert conn.execute("SELECT COUNT(*) FROM call_tags").fetchone() == (0,)
    assert not conn.in_transaction
    assert client.send_message(msgs("a"), temperature=0) is not None
    assert ledger.conns.own().conn is conn


def test_memory_ledger_keeps_the_pool_and_has_no_checkpointer() -> None:
    ledger = repository.Ledger(":memory:")
    try:
        assert ledger.checkpointer is None and not ledger.conns.sqlite
        assert ledger.lookup("", "0" * 64) is None
    finally:
        ledger.close()


def test_close_waits_for_another_threads_call_to_finish(client, api, db_path) -> None:
    client.send_message(msgs("a"), temperature=0)
    ledger = client.ledger
    inside, release, errors = threading.Event(), threading.Event(), []

    def slow_write() -> None:
        try:
            with ledger._transaction() as cur:
                cur.execute("INSERT INTO call_tags (call_id, name, value) VALUES (1, 'k', 'v')")
                inside.set()
                release.wait(10)
        except Exception as exc:  # noqa: BLE001 -- the assertion below names it
            errors.append(exc)

    t = threading.Thread(target=slow_write)
    t.start()
    assert inside.wait(10)
    closer = threading.Thread(target=ledger.close)
    closer.start()
    closer.join(0.3)
    assert closer.is_alive()  # waiting for the write, not closing under it
    release.set()
    t.join(10)
    closer.join(10)
    assert not closer.is_alive() and errors == []
    llm_ledger.flush()  # writes="journal": this process's calls into the tables first
    conn = sqlite3.connect(db_path)
    assert conn.execute("SELECT name, value FROM call_tags").fetchall() == [("k", "v")]
    conn.close()


def _rows_in_the_file_alone(path: Path, copy: Path) -> int:
    """call_log rows a reader of the ``.db`` file alone sees (``cp``, ``?immutable=1``)."""
    llm_ledger.flush()  # calls are written behind them (writes="journal")
    copy.write_bytes(path.read_bytes())
    llm_ledger.flush()  # writes="journal": this process's calls into the tables first
    conn = sqlite3.connect(f"{copy.as_uri()}?immutable=1", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM call_log").fetchone()[0]
    finally:
        conn.close()


def test_after_a_normal_exit_the_db_file_alone_holds_every_row(api, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    db = tmp_path / "demo.db"
    env = {**os.environ, "OPENAI_API_KEY": "sk-x", "OPENAI_BASE_URL": api.url}
    done = subprocess.run(
        [sys.executable, "-c", "from llm_ledger.cli import app; app()", "--db", str(db), "demo"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert _rows_in_the_file_alone(db, tmp_path / "copy.db") == 8
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0


def test_close_truncates_the_wal_so_the_file_alone_is_complete(client, api, db_path) -> None:
    for i in range(5):
        client.send_message(msgs(f"q{i}"), temperature=0)
    repository.close_all()
    wal = Path(f"{db_path}-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    assert _rows_in_the_file_alone(db_path, db_path.with_name("copy.db")) == 5
