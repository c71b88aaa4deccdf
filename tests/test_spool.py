"""The ledger failing while the API answered: the caller still gets the answer, the
record goes to the spool, and recovery writes it into the ledger exactly once.

SQLite is made to fail by a second connection holding ``BEGIN EXCLUSIVE`` past a short
busy timeout; PostgreSQL by closing a TCP proxy the ledger's engine goes through (the
shared server itself is never touched).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from structlog.testing import capture_logs
from typer.testing import CliRunner

import llm_ledger
from llm_ledger.store import db, repository, spool
from llm_ledger.testing import FakeOpenAIServer

from .conftest import Sleeps, msgs

# The synchronous write path (writes="sync"): the default journal moves these writes to its
# writer thread, whose failures test_writebehind.py covers.
pytestmark = pytest.mark.usefixtures("sync_writes")


TABLES = ("requests", "responses", "cache_entries", "call_log", "call_tags")


def counts(url: str) -> dict[str, int]:
    llm_ledger.flush()  # calls are written behind them (writes="journal")
    engine = create_engine(db.normalize_url(url))
    with engine.connect() as conn:
        out = {t: int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()) for t in TABLES}
    engine.dispose()
    return out


def calls(url: str) -> list[tuple]:
    llm_ledger.flush()  # calls are written behind them (writes="journal")
    engine = create_engine(db.normalize_url(url))
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT c.cache_status, c.status, c.attempts, c.error_type, r.response "
                "FROM call_log c LEFT JOIN responses r ON r.id = c.response_id ORDER BY c.id"
            )
        ).all()
    engine.dispose()
    out = []
    for cache_status, status, attempts, error_type, response in rows:
        if isinstance(response, str):
            response = json.loads(response)
        content = response["choices"][0]["message"]["content"] if response else None
        out.append((cache_status, status, attempts, error_type, content))
    return out


@pytest.fixture
def short_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A locked SQLite ledger fails after 100 ms instead of 30 s."""
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 100)


class ExclusiveLock:
    """Another connection holding the SQLite write lock (readers still read, in WAL)."""

    def __init__(self, path: Path) -> None:
        self.con = sqlite3.connect(path, timeout=5, isolation_level=None)

    def __enter__(self) -> ExclusiveLock:
        self.con.execute("BEGIN EXCLUSIVE")
        return self

    def __exit__(self, *exc: object) -> None:
        self.con.execute("ROLLBACK")
        self.con.close()


def spool_path_of(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".spool.jsonl")


# --- SQLite ------------------------------------------------------------------------------


def test_locked_sqlite_ledger_still_answers_and_spools(
    client, api, db_path, short_busy, sleeps: Sleeps
) -> None:
    assert client.send_message(msgs("first"), temperature=0) is not None  # ledger exists
    with ExclusiveLock(db_path), capture_logs() as logs:
        out = client.send_message(msgs("during"), temperature=0)
    assert out["content"] == "answer 1 to: during"
    path = spool_path_of(db_path)
    assert client.ledger.spool_path == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (rec,), bad = spool.read(path)
    assert bad == 0
    assert (rec.cache_status, rec.status, rec.answers[0].response["id"]) == (
        "miss",
        "ok",
        "chatcmpl-2",
    )
    failed = [e for e in logs if e["event"] == "ledger.write_failed"]
    assert failed == [
        {
            "event": "ledger.write_failed",
            "log_level": "error",
            "db": f"sqlite:///{db_path}",
            "call_uuid": rec.call_uuid,
            "request_hash": rec.request_hash,
            "error": "database is locked",
            "spool": str(path),
        }
    ]
    assert counts(str(db_path))["call_log"] == 1


def test_recover_writes_each_spooled_call_once(
    client, api, db_path, short_busy, sleeps: Sleeps
) -> None:
    client.send_message(msgs("cached"), temperature=0)
    with ExclusiveLock(db_path):
        client.send_message(msgs("new"), temperature=0)  # miss, paid
        client.send_message(msgs("cached"), temperature=0)  # hit
        api.fail_next(400)
        client.send_message(msgs("refused"), temperature=0)  # error row
    assert len(spool.read(spool_path_of(db_path))[0]) == 3

    ledger = client.ledger
    assert ledger.recover() == {"written": 3, "already_present": 0, "unreadable": 0, "pending": 0}
    assert not spool_path_of(db_path).exists()
    assert ledger.recover() == {"written": 0, "already_present": 0, "unreadable": 0, "pending": 0}
    assert calls(str(db_path)) == [
        ("miss", "ok", 1, None, "answer 1 to: cached"),
        ("miss", "ok", 1, None, "answer 1 to: new"),
        ("hit", "ok", 0, None, "answer 1 to: cached"),
        ("miss", "error", 1, "BadRequestError", None),
    ]
    # The recovered answer is a cache entry like any other.
    assert client.send_message(msgs("new"), temperature=0)["content"] == "answer 1 to: new"
    assert api.chat_count == 2  # "cached" and "new"; the 400 was no answer


def test_next_open_of_the_ledger_recovers_the_spool(client, api, db_path, short_busy) -> None:
    client.send_message(msgs("first"), temperature=0)
    with ExclusiveLock(db_path):
        client.send_message(msgs("during"), temperature=0)
    repository.close_all()
    with capture_logs() as logs:
        repository.open_ledger(str(db_path))
    assert not spool_path_of(db_path).exists()
    assert [e["event"] for e in logs] == ["ledger.recovered"]
    assert (logs[0]["written"], logs[0]["already_present"]) == (1, 0)
    assert counts(str(db_path)) == {
        "requests": 2,
        "responses": 2,
        "cache_entries": 2,
        "call_log": 2,
        "call_tags": 0,
    }


def test_recover_while_still_locked_keeps_the_spool(client, api, db_path, short_busy) -> None:
    client.send_message(msgs("first"), temperature=0)
    with ExclusiveLock(db_path):
        client.send_message(msgs("during"), temperature=0)
        with capture_logs() as logs:
            result = client.ledger.recover()
    assert result == {"written": 0, "already_present": 0, "unreadable": 0, "pending": 1}
    assert [e["event"] for e in logs] == ["ledger.recover_failed"]
    assert spool_path_of(db_path).exists()
    assert client.ledger.recover()["written"] == 1


def test_a_record_already_in_the_ledger_is_not_written_again(
    client, api, db_path, short_busy
) -> None:
    client.send_message(msgs("first"), temperature=0)
    with ExclusiveLock(db_path):
        client.send_message(msgs("during"), temperature=0)
    path = spool_path_of(db_path)
    (rec,), _ = spool.read(path)
    client.ledger.record(rec)  # e.g. a recovery that stopped before removing the spool
    spool.append(path, rec)  # and the same line twice
    assert client.ledger.recover() == {
        "written": 0,
        "already_present": 2,
        "unreadable": 0,
        "pending": 0,
    }
    assert counts(str(db_path))["call_log"] == 2


def test_torn_last_line_is_kept_aside_and_the_rest_recovered(
    client, api, db_path, short_busy
) -> None:
    client.send_message(msgs("first"), temperature=0)
    with ExclusiveLock(db_path):
        client.send_message(msgs("during é"), temperature=0)
    path = spool_path_of(db_path)
    whole = path.read_bytes()
    cut = whole.index("é".encode()) + 1  # inside a two-byte UTF-8 character
    with open(path, "ab") as fh:
        fh.write(whole[:cut])  # a crash in the middle of a second append
    assert client.ledger.recover() == {
        "written": 1,
        "already_present": 0,
        "unreadable": 1,
        "pending": 0,
    }
    assert not path.exists()
    assert path.with_name(path.name + ".unreadable").read_bytes() == whole + whole[:cut]


def test_spool_appends_are_fsynced(
    client, api, db_path, short_busy, monkeypatch: pytest.MonkeyPatch
) -> None:
    client.send_message(msgs("first"), temperature=0)
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    with ExclusiveLock(db_path):
        client.send_message(msgs("one"), temperature=0)
        first = len(synced)
        client.send_message(msgs("two"), temperature=0)
    assert first == 2  # the new file, and its directory entry
    assert len(synced) == 3  # each later line
    assert len(spool.read(spool_path_of(db_path))[0]) == 2


def test_spool_dir_setting_puts_the_spool_there(api, db_path, tmp_path, short_busy) -> None:
    where = tmp_path / "spools"
    client = llm_ledger.OpenAIClient(cache_file_name=str(db_path), spool_dir=str(where))
    client.send_message(msgs("first"), temperature=0)
    with ExclusiveLock(db_path):
        assert client.send_message(msgs("during"), temperature=0) is not None
    digest = hashlib.sha256(f"sqlite:///{db_path}".encode()).hexdigest()[:12]
    path = where / f"spool-{digest}.jsonl"
    assert client.ledger.spool_path == path
    assert len(spool.read(path)[0]) == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_cli_recover_writes_the_spool(client, api, db_path, short_busy) -> None:
    from llm_ledger.cli import app

    client.send_message(msgs("first"), temperature=0)
    with ExclusiveLock(db_path):
        client.send_message(msgs("during"), temperature=0)
    repository.close_all()
    path = spool_path_of(db_path)
    result = CliRunner().invoke(app, ["--db", str(db_path), "recover"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"recovered {path} into ")
    assert result.output.endswith(": 1 written, 0 already present, 0 unreadable, 0 pending\n"), (
        result.output
    )
    assert not path.exists()
    assert counts(str(db_path))["call_log"] == 2


def test_a_recovered_call_names_the_answer_its_caller_got(client, api, db_path, short_busy) -> None:
    client.send_message(msgs("first"), temperature=0)
    with ExclusiveLock(db_path):
        got = client.send_message(msgs("x"), temperature=0)  # spooled
    assert got["content"] == "answer 1 to: x"
    assert client.send_message(msgs("x"), temperature=0)["content"] == "answer 2 to: x"
    assert client.ledger.recover()["written"] == 1
    assert calls(str(db_path))[1:] == [
        ("miss", "ok", 1, None, "answer 2 to: x"),
        ("miss", "ok", 1, None, "answer 1 to: x"),  # the spooled call, recovered last
    ]


def test_threads_and_processes_append_whole_lines(
    client, api, db_path, short_busy, tmp_path
) -> None:
    client.send_message(msgs("first"), temperature=0)
    with ExclusiveLock(db_path):
        client.send_message(msgs("x" * 5000), temperature=0)  # a long line
    path = spool_path_of(db_path)
    (rec,), _ = spool.read(path)
    path.unlink()
    script = (
        "import sys; from llm_ledger.store import spool; "
        "rec = spool.read(__import__('pathlib').Path(sys.argv[1]))[0][0]; "
        "[spool.append(__import__('pathlib').Path(sys.argv[2]), rec) for _ in range(200)]"
    )
    template = tmp_path / "one.jsonl"
    spool.append(template, rec)
    children = [
        subprocess.Popen([sys.executable, "-c", script, str(template), str(path)]) for _ in range(2)
    ]
    threads = [
        threading.Thread(target=lambda: [spool.append(path, rec) for _ in range(100)])
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [c.wait() for c in children] == [0, 0]
    records, bad = spool.read(path)
    assert (len(records), bad) == (800, 0)
    assert client.ledger.recover() == {
        "written": 1,
        "already_present": 799,
        "unreadable": 0,
        "pending": 0,
    }


def test_a_record_spooled_during_recovery_is_not_lost(
    client, api, db_path, short_busy, monkeypatch: pytest.MonkeyPatch
) -> None:
    client.send_message(msgs("first"), temperature=0)
    with ExclusiveLock(db_path):
        client.send_message(msgs("early"), temperature=0)
        client.send_message(msgs("late"), temperature=0)
    path = spool_path_of(db_path)
    early, late = spool.read(path)[0]
    path.unlink()
    spool.append(path, early)
    ledger = client.ledger
    real_read = spool.read

    def read_then_another_thread_spools(p: Path):
        result = real_read(p)
        spool.append(ledger.spool_path, late)  # lands between the read and the unlink
        return result

    monkeypatch.setattr(spool, "read", read_then_another_thread_spools)
    ledger.recover()
    monkeypatch.setattr(spool, "read", real_read)
    in_spool = {r.call_uuid for r in real_read(path)[0]}
    assert ledger.has_call(late.call_uuid) or late.call_uuid in in_spool


def test_claim_moves_the_spool_aside_atomically(tmp_path: Path) -> None:
    path = tmp_path / "x.spool.jsonl"
    assert spool.claim(path) is None
    path.write_text("{}\n")
    claimed = spool.claim(path)
    assert claimed is not None and claimed.read_text() == "{}\n"
    assert claimed.name.startswith("x.spool.jsonl.recovering-")
    assert not path.exists()


# --- PostgreSQL through a proxy we can cut -----------------------------------------------


class TcpProxy:
    """127.0.0.1:<port> forwarded to a target; ``close`` refuses and cuts every connection."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                down, _ = listener.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(self.target)
            except OSError:
                down.close()
                continue
            with self._lock:
                self._conns |= {down, up}
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = self._conns, set()
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


@pytest.fixture
def pg_proxy(pg_url: str) -> Iterator[tuple[TcpProxy, str]]:
    target = make_url(db.normalize_url(pg_url))
    proxy = TcpProxy(target.host or "127.0.0.1", target.port or 5432).start()
    url = target.set(port=proxy.port).render_as_string(hide_password=False)
    yield proxy, url
    repository.close_all()
    proxy.close()


def test_postgres_outage_spools_and_next_open_recovers(
    pg_proxy, api: FakeOpenAIServer, tmp_path, monkeypatch: pytest.MonkeyPatch, sleeps
) -> None:
    proxy, url = pg_proxy
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    client = llm_ledger.OpenAIClient(cache_file_name=url, sleep=sleeps)
    assert client.send_message(msgs("before"), temperature=0) is not None

    proxy.close()  # PostgreSQL "stops"
    with capture_logs() as logs:
        out = client.send_message(msgs("during"), temperature=0)
        hit_lost = client.send_message(msgs("before"), temperature=0)  # cannot read: a miss
    assert out["content"] == "answer 1 to: during"
    assert hit_lost["content"] == "answer 2 to: before"
    events = [e["event"] for e in logs]
    assert events == ["ledger.read_failed", "ledger.write_failed"] * 2
    digest = hashlib.sha256(db.normalize_url(url).encode()).hexdigest()[:12]
    path = tmp_path / "cache" / "llm_ledger" / f"spool-{digest}.jsonl"
    assert client.ledger.spool_path == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(spool.read(path)[0]) == 2

    proxy.start()  # back, on the same port
    repository.close_all()
    ledger = repository.open_ledger(url)
    assert not path.exists()
    assert ledger.recover()["written"] == 0
    assert [c[:4] for c in calls(url)] == [("miss", "ok", 1, None)] * 3
    assert [c[4] for c in calls(url)][:2] == ["answer 1 to: before", "answer 1 to: during"]
    assert counts(url) == {
        "requests": 2,
        "responses": 3,
        "cache_entries": 2,
        "call_log": 3,
        "call_tags": 0,
    }


def test_postgres_cut_mid_run_then_recover(
    pg_proxy, api: FakeOpenAIServer, tmp_path, sleeps
) -> None:
    proxy, url = pg_proxy
    client = llm_ledger.OpenAIClient(cache_file_name=url, spool_dir=str(tmp_path), sleep=sleeps)
    for i in range(3):
        client.send_message(msgs(f"up {i}"), temperature=0)
    proxy.close()
    for i in range(3):
        assert client.send_message(msgs(f"down {i}"), temperature=0) is not None
    proxy.start()
    ledger = client.ledger
    assert ledger.recover() == {"written": 3, "already_present": 0, "unreadable": 0, "pending": 0}
    assert ledger.recover()["written"] == 0
    assert counts(url)["call_log"] == 6
    for i in range(3):
        client.send_message(msgs(f"down {i}"), temperature=0)
    assert api.chat_count == 6  # the recovered answers are served from the ledger
