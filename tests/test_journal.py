"""The write-behind journal (llm_ledger/store/journal.py): nothing appended is lost, even on SIGKILL.

The journal is storage-agnostic; here ``write_batch`` writes into a small SQLite table
whose ``call_uuid`` is unique, as the ledger's is, and skips a uuid already there.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from llm_ledger.store import journal

SCHEMA = "CREATE TABLE IF NOT EXISTS calls (call_uuid TEXT PRIMARY KEY, n INTEGER)"


class Table:
    """The stand-in for the ledger's tables: idempotent by call_uuid, batches counted."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.batches: list[int] = []
        self.fail = 0
        with sqlite3.connect(path) as conn:
            conn.execute(SCHEMA)

    def write_batch(self, records: list[dict[str, Any]]) -> None:
        if self.fail:
            self.fail -= 1
            raise sqlite3.OperationalError("database is locked")
        with sqlite3.connect(self.path) as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO calls VALUES (?, ?)",
                [(r["call_uuid"], r["n"]) for r in records],
            )
        self.batches.append(len(records))

    def uuids(self) -> list[str]:
        with sqlite3.connect(self.path) as conn:
            return [row[0] for row in conn.execute("SELECT call_uuid FROM calls ORDER BY n")]


@pytest.fixture
def table(tmp_path: Path) -> Table:
    return Table(tmp_path / "ledger.db")


def record(n: int) -> dict[str, Any]:
    return {"call_uuid": f"u{n:05d}", "n": n, "answer": "é" * (n % 3)}


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.jsonl"))


def test_an_appended_record_is_in_the_file_before_it_is_written(
    tmp_path: Path, table: Table
) -> None:
    j = journal.Journal(tmp_path / "j", table.write_batch, interval=60)
    try:
        j.append(record(1))
        j.append(record(2))
        [segment] = segments(tmp_path / "j")
        assert journal.read_segment(segment) == [record(1), record(2)]
        assert table.uuids() == []
        assert j.pending() == 2
    finally:
        j.close()


def test_flush_writes_in_one_batch_and_empties_the_segment(tmp_path: Path, table: Table) -> None:
    j = journal.Journal(tmp_path / "j", table.write_batch, interval=60)
    for n in range(5):
        j.append(record(n))
    j.flush()
    assert table.uuids() == [f"u{n:05d}" for n in range(5)]
    assert table.batches == [5]
    [segment] = segments(tmp_path / "j")
    assert segment.stat().st_size == 0
    j.append(record(5))
    assert journal.read_segment(segment) == [record(5)]
    j.close()
    assert table.uuids()[-1] == "u00005"
    assert segments(tmp_path / "j") == []


def test_the_background_thread_writes_without_a_flush(tmp_path: Path, table: Table) -> None:
    j = journal.Journal(tmp_path / "j", table.write_batch, interval=0.001)
    try:
        j.append(record(7))
        deadline = time.monotonic() + 10
        while table.uuids() != ["u00007"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert table.uuids() == ["u00007"]
    finally:
        j.close()


def test_pending_records_are_found_by_key_until_written(tmp_path: Path, table: Table) -> None:
    j = journal.Journal(
        tmp_path / "j", table.write_batch, entries_of=lambda r: [(r["call_uuid"], r)], interval=60
    )
    j.append(record(3))
    assert j.find("u00003") == record(3)
    assert j.find("u00004") is None
    j.flush()
    assert j.find("u00003") is None
    j.close()


def test_a_failed_batch_stays_journaled_and_is_written_later(tmp_path: Path, table: Table) -> None:
    j = journal.Journal(tmp_path / "j", table.write_batch, interval=60)
    j.append(record(1))
    table.fail = 1
    with pytest.raises(sqlite3.OperationalError):
        j.flush()
    assert j.pending() == 1
    [segment] = segments(tmp_path / "j")
    assert journal.read_segment(segment) == [record(1)]
    j.flush()
    assert table.uuids() == ["u00001"]
    j.close()


def test_a_full_segment_is_deleted_once_written(tmp_path: Path, table: Table) -> None:
    j = journal.Journal(tmp_path / "j", table.write_batch, interval=60, segment_bytes=60)
    for n in range(6):
        j.append(record(n))
    assert len(segments(tmp_path / "j")) == 3  # ~45 bytes a line: 2 lines per segment
    j.flush()
    assert len(segments(tmp_path / "j")) == 1
    j.close()
    assert len(table.uuids()) == 6


def test_recover_writes_a_dead_segment_and_leaves_a_live_one(tmp_path: Path, table: Table) -> None:
    directory = tmp_path / "j"
    live = journal.Journal(directory, table.write_batch, interval=60)
    live.append(record(1))
    dead = directory / "99999-dead-1.jsonl"
    # a complete line, then one cut short by the kill: that call never returned
    dead.write_bytes(b'{"call_uuid":"u00002","n":2}\n{"call_uuid":"u0000')
    assert journal.recover(directory, table.write_batch) == 1
    assert table.uuids() == ["u00002"]
    assert not dead.exists()
    assert len(segments(directory)) == 1  # the live one, untouched
    live.close()
    assert table.uuids() == ["u00001", "u00002"]


CHILD = """
import sqlite3, sys, threading
from pathlib import Path
from llm_ledger.store import journal

db, directory, run = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])

def write_batch(records):
    with sqlite3.connect(db, timeout=30) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executemany(
            "INSERT OR IGNORE INTO calls VALUES (?, ?)", [(r["call_uuid"], r["n"]) for r in records]
        )

j = journal.Journal(directory, write_batch, interval=0.002, segment_bytes=4096)
out = sys.stdout
lock = threading.Lock()

def caller(t):
    n = 0
    while True:
        uuid = f"r{run}-t{t}-{n}"
        j.append({"call_uuid": uuid, "n": n, "pad": "x" * 50})
        with lock:  # the call returned: say so
            out.write(uuid + "\\n")
            out.flush()
        n += 1

for t in range(4):
    threading.Thread(target=caller, args=(t,), daemon=True).start()
threading.Event().wait()
"""


def test_sigkill_at_any_moment_loses_no_returned_record_and_duplicates_none(
    tmp_path: Path,
) -> None:
    db = tmp_path / "ledger.db"
    with sqlite3.connect(db) as conn:
        conn.execute(SCHEMA)
    directory = tmp_path / "j"
    returned: set[str] = set()
    for run, delay in enumerate((0.3, 0.45, 0.6, 0.8, 1.1)):
        child = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(CHILD), str(db), str(directory), str(run)],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(delay)
        os.kill(child.pid, signal.SIGKILL)
        out, _ = child.communicate()
        returned |= {line for line in out.splitlines() if line}
    assert len(returned) > 100  # the children did make calls before they were killed

    table = Table(db)
    journal.recover(directory, table.write_batch)
    rows = table.uuids()
    assert len(rows) == len(set(rows))  # exactly once
    assert returned <= set(rows)  # every call that returned has its row
    attempted = {u.rsplit("-", 1)[0] for u in rows}
    assert attempted <= {f"r{run}-t{t}" for run in range(5) for t in range(4)}
    assert segments(directory) == []  # recovered segments are gone
    assert journal.recover(directory, table.write_batch) == 0


LEDGER_CHILD = """
import sys, threading
import llm_ledger

c = llm_ledger.OpenAIClient(cache_file_name=sys.argv[1])
writer = c.ledger._record_writer()
writer.interval = 3600  # the thread waits: only the journal (and the callers) have the rows
writer.inline_batch = int(sys.argv[2]) or None  # a caller writes each burst of this many hits
c.send_message([{"role": "user", "content": "first"}], temperature=0)
c.ledger.flush()  # the ledger holds the first call
lock = threading.Lock()
print("ready", flush=True)

def caller(t):
    n = 0
    while True:
        q = [{"role": "user", "content": f"q {t} {n}"}]
        c.send_message(q, temperature=0)  # a miss: a paid answer, journaled
        with lock:  # it returned: say so
            sys.stdout.write("miss\\n")
            sys.stdout.flush()
        c.send_message(q, temperature=0)  # a hit on the answer still in the journal
        with lock:
            sys.stdout.write("hit\\n")
            sys.stdout.flush()
        n += 1

for t in range(4):
    threading.Thread(target=caller, args=(t,), daemon=True).start()
threading.Event().wait()
"""


def _counts(db: Path) -> dict[str, Any]:
    with sqlite3.connect(db) as conn:
        q = conn.execute
        return {
            "miss": q("SELECT count(*) FROM call_log WHERE cache_status = 'miss'").fetchone()[0],
            "hit": q("SELECT count(*) FROM call_log WHERE cache_status = 'hit'").fetchone()[0],
            "uuids": q("SELECT count(DISTINCT call_uuid) FROM call_log").fetchone()[0],
            "rows": q("SELECT count(*) FROM call_log").fetchone()[0],
            "entries": q("SELECT count(*) FROM cache_entries").fetchone()[0],
            "responses": q("SELECT count(*) FROM responses").fetchone()[0],
            # a hit names the answer it was served, found once its miss was written
            "hits_served_their_miss": q(
                "SELECT count(*) FROM call_log h JOIN call_log m ON m.request_hash = "
                "h.request_hash AND m.cache_status = 'miss' AND m.response_id = h.response_id "
                "WHERE h.cache_status = 'hit'"
            ).fetchone()[0],
        }


def _killed_child(api: Any, db: Path, seconds: float, inline: int = 0) -> tuple[int, int]:
    """Run LEDGER_CHILD, SIGKILL it after ``seconds``; the misses and hits that returned."""
    env = {"PATH": "/usr/bin:/bin", "OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": api.url}
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(LEDGER_CHILD), str(db), str(inline)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None and child.stderr is not None
    assert child.stdout.readline() == "ready\n", child.stderr.read()
    time.sleep(seconds)
    os.kill(child.pid, signal.SIGKILL)
    out, _ = child.communicate()
    return out.count("miss\n"), out.count("hit\n")


@pytest.mark.parametrize("inline", [0, 8], ids=["thread-only", "callers-write-bursts"])
def test_journaled_calls_survive_sigkill_and_are_written_at_the_next_open(
    api: Any, tmp_path: Path, inline: int
) -> None:
    """The default (writes="journal"): every call that returned, miss or hit, has its row
    after a SIGKILL, each once, and every paid answer its cache entry. Also when callers
    write their own bursts (``inline``): the kill then finds rows in the tables and rows
    in the journal, some of them in both."""
    from llm_ledger import open_ledger
    from llm_ledger.store import repository

    db = tmp_path / "ledger.db"
    misses, hits = _killed_child(api, db, 0.8, inline)
    assert misses > 10 and hits > 10
    before = _counts(db)
    if inline:
        assert 1 < before["rows"] <= misses + hits + 1 + 4  # callers wrote some bursts
    else:
        assert before["rows"] == 1  # only the first call was written: the journal held the rest
    ledger = open_ledger(str(db))  # recovers the dead process's journal
    after = _counts(db)
    assert after["rows"] == after["uuids"]  # each once
    # every returned call; at most one call in flight per thread on top
    assert misses <= after["miss"] - 1 <= misses + 4
    assert hits <= after["hit"] <= hits + 4
    assert after["entries"] == after["responses"] == after["miss"]  # every paid answer kept
    assert after["hits_served_their_miss"] == after["hit"]
    # a call killed between its API answer and its journal line was never returned
    assert after["miss"] <= api.chat_count <= after["miss"] + 4
    if inline:  # a segment is cut once all of it is written: it may repeat written rows
        assert after["rows"] - before["rows"] <= ledger.journal_recovered < after["rows"]
    else:
        assert ledger.journal_recovered == after["rows"] - 1
    assert segments(ledger.journal_dir) == []
    repository.close_all()


def test_a_hit_record_comes_back_from_its_journal_line_unchanged() -> None:
    import dataclasses
    import json
    from datetime import datetime, timezone
    from decimal import Decimal

    from llm_ledger.records import CallRecord, Usage
    from llm_ledger.store import writebehind

    request = {"model": "gpt-4o", "messages": [{"role": "user", "content": "é"}]}
    rec = CallRecord(
        call_uuid="u1",
        created_at=datetime(2026, 11, 27, 12, 0, 1, 123456, tzinfo=timezone.utc),
        kind="chat",
        api_type="openai",
        endpoint_host="api.openai.com",
        model="gpt-4o",
        namespace="",
        request_hash="h" * 64,
        request=request,
        cache_status="hit",
        status="ok",
        library_version="0.1.0",
        slot=0,
        latency_ms=0.25,
        usage=Usage(prompt_tokens=9, completion_tokens=3, total_tokens=12),
        saved_usd=Decimal("0.000123"),
        tags={"team": "a"},
        served_response_id=7,
        request_text=json.dumps(request, separators=(",", ":"), ensure_ascii=False),
    )
    line = writebehind.journal_line(rec)
    assert line.endswith(',"request":' + rec.request_text + ',"answers":[]}')  # spliced in
    back = writebehind.from_journal(json.loads(line))
    assert back == dataclasses.replace(rec, request_text=None)


def test_a_refused_recovery_batch_is_written_row_by_row(
    api: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llm_ledger import open_ledger
    from llm_ledger.store import repository

    db = tmp_path / "ledger.db"
    misses, hits = _killed_child(api, db, 0.5)

    real = repository.Ledger._record
    failed = []

    def refuse_once(self: Any, cur: Any, rec: Any, **kw: Any) -> Any:
        if not failed:
            failed.append(rec.call_uuid)
            raise sqlite3.OperationalError("database is locked")
        return real(self, cur, rec, **kw)

    monkeypatch.setattr(repository.Ledger, "_record", refuse_once)
    ledger = open_ledger(str(db))
    after = _counts(db)
    assert failed  # the first batch was refused
    assert after["rows"] == after["uuids"]
    assert misses <= after["miss"] - 1 <= misses + 4 and hits <= after["hit"] <= hits + 4
    assert after["entries"] == after["responses"] == after["miss"]
    assert not ledger.spool_path.exists()  # row by row, every one went in
    assert segments(ledger.journal_dir) == []
    repository.close_all()
