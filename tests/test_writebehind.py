"""writes="journal" (the default): a call's records are journaled, then written behind it.

SIGKILL and recovery: tests/test_journal.py. Here: what a caller in the same process sees,
and what happens when the writer or the journal fails.
"""

import json
import sqlite3
from pathlib import Path

import pytest

import llm_ledger
from llm_ledger import config
from llm_ledger.store import db, spool

from .conftest import CannedClient, msgs
from .test_secrets import logs  # noqa: F401 -- a fixture


def _table(path: Path, sql: str) -> list[tuple]:
    """Read on a connection of the test's own, without flushing anything first."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.fixture
def slow_writer(client: llm_ledger.OpenAIClient) -> llm_ledger.OpenAIClient:
    """The client, its writer thread asleep and no caller writing its own burst: only
    flush() writes."""
    writer = client.ledger._record_writer()
    writer.interval = 3600
    writer.inline_batch = None
    return client


def test_a_call_returns_before_its_rows_are_written_and_flush_writes_them(
    slow_writer, api, db_path
) -> None:
    c = slow_writer
    assert c.send_message(msgs("q"), temperature=0)["content"] == "answer 1 to: q"
    assert _table(db_path, "SELECT count(*) FROM call_log") == [(0,)]
    # This process's lookups see the answer still queued: a hit, no API call.
    assert c.send_message(msgs("q"), temperature=0)["content"] == "answer 1 to: q"
    assert api.chat_count == 1
    assert c.ledger._writer.pending() == 2
    llm_ledger.flush()
    got = _table(db_path, "SELECT cache_status, response_id FROM call_log ORDER BY id")
    # The hit names the entry it was served from, written just before it.
    assert got == [("miss", 1), ("hit", 1)]
    assert _table(db_path, "SELECT count(*) FROM cache_entries") == [(1,)]
    assert c.ledger._writer.pending() == 0 and c.ledger._writer._pending == {}


def test_a_read_through_the_ledgers_engine_writes_the_queue_first(slow_writer, api) -> None:
    from sqlalchemy import text

    slow_writer.send_message(msgs("q"), temperature=0)
    with slow_writer.ledger.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM call_log")).scalar() == 1


def test_the_stored_answer_is_what_the_call_returned_even_if_the_caller_edits_it(
    db_path,
) -> None:
    c = CannedClient(cache_file_name=str(db_path))
    c.ledger._record_writer().interval = 3600
    answer = c.send_message(msgs(), temperature=0)
    answer["content"] = "edited by the caller"  # before the writer stored it
    again = c.send_message(msgs(), temperature=0)  # a hit on the queued answer
    again["content"] = "edited again"
    llm_ledger.flush()
    [(stored,)] = _table(db_path, "SELECT response FROM responses")
    assert json.loads(stored)["choices"][0]["message"]["content"] == "canned"
    assert c.send_message(msgs(), temperature=0)["content"] == "canned"


def test_a_batch_the_database_refuses_is_spooled_and_recovered(
    slow_writer, api, db_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 100)
    c = slow_writer
    c.send_message(msgs("first"), temperature=0)
    llm_ledger.flush()
    lock = sqlite3.connect(db_path, timeout=5, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        assert c.send_message(msgs("paid"), temperature=0)["content"] == "answer 1 to: paid"
        c.ledger.flush()  # refused as a batch, then row by row: spooled
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    records, bad = spool.read(c.ledger.spool_path)
    assert bad == 0
    assert [r.answers[0].response["choices"][0]["message"]["content"] for r in records] == [
        "answer 1 to: paid"
    ]
    assert c.ledger.recover()["written"] == 1
    assert _table(db_path, "SELECT count(*) FROM call_log") == [(2,)]
    assert c.send_message(msgs("paid"), temperature=0)["content"] == "answer 1 to: paid"
    assert api.chat_count == 2


def test_a_journal_that_cannot_be_written_sends_the_call_down_the_sync_path(
    client,
    api,
    db_path,
    logs,  # noqa: F811 -- the fixture
) -> None:
    client.ledger.journal_dir.write_text("a file where the journal's directory goes")
    assert client.send_message(msgs("q"), temperature=0)["content"] == "answer 1 to: q"
    # Committed before it returned: no flush needed.
    assert _table(db_path, "SELECT cache_status FROM call_log") == [("miss",)]
    assert [e["event"] for e in logs if e["event"].startswith("ledger.journal")] == [
        "ledger.journal_append_failed"
    ]


def test_writes_sync_commits_before_the_call_returns(client, api, db_path) -> None:
    config.set_default("writes", "sync")
    client.send_message(msgs("q"), temperature=0)
    client.send_message(msgs("q"), temperature=0)
    assert _table(db_path, "SELECT cache_status FROM call_log ORDER BY id") == [
        ("miss",),
        ("hit",),
    ]
    assert client.ledger._writer is None


def test_an_in_memory_ledger_is_never_journaled(api) -> None:
    c = llm_ledger.OpenAIClient(cache_file_name="sqlite://")
    c.send_message(msgs("q"), temperature=0)
    assert c.ledger.journaled is False and c.ledger._writer is None


def test_writes_must_be_journal_or_sync() -> None:
    with pytest.raises(
        llm_ledger.ConfigError, match="writes='later': must be one of journal, sync"
    ):
        config.set_default("writes", "later")


def test_a_batch_writes_its_answers_in_one_statement_and_each_is_searchable(
    slow_writer, api, db_path
) -> None:
    """FTS5 writes its pending index at every statement that changes it: one INSERT per
    answer flushed one index segment per answer. A batch now writes its answers in one
    statement, with the ids the database would have given one by one."""
    c = slow_writer
    words = ["alpha", "bravo", "charlie", "delta", "echo"]
    # First: its lookup reads through the engine, which would write the queue before it.
    c.get_embedding(["one", "two", "three"])  # three answers in one call
    for w in words:
        c.send_message(msgs(f"tell me about {w}"), temperature=0)
    c.send_message(msgs("tell me about alpha"), temperature=0)  # a hit on a queued answer
    conn = sqlite3.connect(db_path)
    # No merging, so each flush of the index stays a segment of its own to count.
    conn.execute("INSERT INTO answer_search(answer_search, rank) VALUES ('automerge', 0)")
    conn.commit()
    llm_ledger.flush()
    # %_data rowids: (segment id << 37) + ...; 1 and 10 are the structure and averages.
    segments = "SELECT count(DISTINCT id >> 37) FROM answer_search_data WHERE id > 10"
    assert conn.execute(segments).fetchall() == [(1,)]  # one statement, one flush
    calls = _table(db_path, "SELECT cache_status, response_id FROM call_log ORDER BY id")
    assert calls == [("miss", None), ("miss", 4), ("miss", 5), ("miss", 6), ("miss", 7),
                     ("miss", 8), ("hit", 4)]  # fmt: skip
    assert _table(db_path, "SELECT id FROM responses ORDER BY id") == [(i,) for i in range(1, 9)]
    entries = _table(db_path, "SELECT response_id FROM cache_entries ORDER BY response_id")
    assert entries == [(i,) for i in range(1, 9)]
    try:
        conn.execute("INSERT INTO answer_search(answer_search) VALUES ('integrity-check')")
        for i, w in enumerate(words, start=4):
            found = conn.execute(
                "SELECT rowid FROM answer_search WHERE answer_search MATCH ?", (w,)
            ).fetchall()
            assert found == [(i,)], w
    finally:
        conn.close()


def test_a_batch_of_more_answers_than_one_statement_takes_writes_them_all(
    slow_writer, api, db_path
) -> None:
    """250 answers in one call: two statements (200 + 50), ids 1..250 in input order."""
    from llm_ledger.store import repository

    items = [f"item {i}" for i in range(repository.ROWS_PER_STATEMENT + 50)]
    vectors = slow_writer.get_embedding(items)
    llm_ledger.flush()
    n = len(items)
    assert len({tuple(v) for v in vectors}) == n  # each item's vector is its own
    assert _table(db_path, "SELECT min(id), max(id), count(*) FROM responses") == [(1, n, n)]
    got = _table(
        db_path,
        "SELECT json_extract(r.response, '$.data[0].embedding') FROM cache_entries e "
        "JOIN responses r ON r.id = e.response_id ORDER BY r.id",
    )
    assert [json.loads(v) for (v,) in got] == vectors  # each id holds its own item's answer
    conn = sqlite3.connect(db_path)
    try:
        conn.execute("INSERT INTO answer_search(answer_search) VALUES ('integrity-check')")
    finally:
        conn.close()


def test_a_read_waits_for_the_batch_the_writer_is_committing(client, api, monkeypatch) -> None:
    """The writer thread takes a batch off the queue before committing it: a read through
    the engine in between found nothing queued and ran before the commit (seen on MariaDB:
    a view read right after a call came back empty)."""
    import threading
    import time

    from sqlalchemy import text

    ledger = client.ledger
    real = ledger._record_batch
    taken = threading.Event()

    def slow(recs):  # type: ignore[no-untyped-def]
        taken.set()
        time.sleep(0.3)  # the batch is off the queue, not committed yet
        real(recs)

    monkeypatch.setattr(ledger, "_record_batch", slow)  # before the writer is made
    client.send_message(msgs("q"), temperature=0)
    assert taken.wait(10)
    assert ledger._writer.pending() == 0  # nothing queued: only the batch in flight
    with ledger.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM call_log")).scalar() == 1


def test_an_embedding_lookup_does_not_write_the_queue_on_the_callers_thread(
    slow_writer, api, db_path
) -> None:
    """Several items are looked up at once on the thread's own connection, like a chat
    lookup: before, they read through the engine, which wrote every queued record first,
    on the caller's thread, at each embedding call."""
    c = slow_writer
    c.send_message(msgs("q"), temperature=0)
    first = c.get_embedding(["a", "b"])
    assert _table(db_path, "SELECT count(*) FROM call_log") == [(0,)]  # still queued
    assert c.ledger._writer.pending() == 2
    assert c.get_embedding(["b", "a", "c"])[:2] == [first[1], first[0]]  # a, b from the queue
    assert api.embedding_count == 2  # the second call sent only "c"
    llm_ledger.flush()
    assert c.get_embedding(["c", "a"])[1] == first[0]  # now from the tables: a hit
    assert api.embedding_count == 2
    llm_ledger.flush()
    got = _table(db_path, "SELECT cache_status, items_total, items_hit FROM call_log ORDER BY id")
    assert got == [("miss", None, None), ("miss", 2, 0), ("miss", 3, 2), ("hit", 2, 2)]


def _traced_batches(monkeypatch) -> list[str]:
    """Every statement the writer's transactions run (set on the connection at BEGIN)."""
    from llm_ledger.store import connections

    statements: list[str] = []
    real = connections.begin_write

    def traced(conn, timeout_ms, **kwargs):
        conn.set_trace_callback(statements.append)
        real(conn, timeout_ms, **kwargs)

    monkeypatch.setattr(connections, "begin_write", traced)
    return statements


@pytest.mark.parametrize("max_variables", [32_766, 999])  # SQLite 3.32+, and before
def test_a_batch_of_plain_hits_goes_in_as_few_statements_as_sqlite_allows(
    slow_writer, api, db_path, monkeypatch, max_variables
) -> None:
    """Each statement is a GIL handoff while the write lock is held (every other process's
    writer waits): 450 hit rows went in as 450 executions, now 200 + 200 + 50."""
    from llm_ledger.store import repository

    monkeypatch.setattr(repository, "SQLITE_MAX_VARIABLES", max_variables)
    slow_writer.send_message(msgs("the question"), temperature=0)
    llm_ledger.flush()
    statements = _traced_batches(monkeypatch)
    for _ in range(450):
        slow_writer.send_message(msgs("the question"), temperature=0)
    llm_ledger.flush()

    columns = len(slow_writer.ledger._sql.insert_call.names)
    per = min(repository.ROWS_PER_STATEMENT, max_variables // columns)
    inserts = [s for s in statements if s.startswith("INSERT INTO call_log")]
    assert len(inserts) == -(-450 // per)  # 3 with SQLite 3.32+, 17 before
    rows = _table(db_path, "SELECT id, cache_status, response_id FROM call_log ORDER BY id")
    assert rows == [(1, "miss", 1)] + [(i, "hit", 1) for i in range(2, 452)]
    uuids = _table(db_path, "SELECT count(DISTINCT call_uuid) FROM call_log")
    assert uuids == [(451,)]


@pytest.mark.parametrize("max_variables", [32_766, 999])
def test_a_batch_of_stores_and_hits_writes_each_table_in_few_statements_in_call_order(
    slow_writer, api, db_path, monkeypatch, max_variables
) -> None:
    """40 stores, each tagged with its number, a hit after every fourth: before, each store
    ran its own request, entry, audit-row and tag statements (160+), and each statement
    held the write lock across a GIL handoff. Now one INSERT per table and per 200 rows
    (per 28 audit rows at SQLite's old 999-parameter limit: ids across statements)."""
    from llm_ledger.store import repository

    monkeypatch.setattr(repository, "SQLITE_MAX_VARIABLES", max_variables)
    slow_writer.send_message(msgs("already stored"), temperature=0)
    llm_ledger.flush()
    statements = _traced_batches(monkeypatch)
    expected = []
    for n in range(40):
        with llm_ledger.scope(tags={"n": str(n)}):
            slow_writer.send_message(msgs(f"question {n}"), temperature=0)
        expected.append(("miss", n + 2, str(n)))
        if n % 4 == 3:
            slow_writer.send_message(msgs("already stored"), temperature=0)
            expected.append(("hit", 1, None))
    llm_ledger.flush()

    def count(table: str) -> int:
        # Distinct texts (with their values): SQLite traces a statement again at the start
        # of each trigger program it runs (the search index's, on responses).
        return len({s for s in statements if s.startswith(f"INSERT INTO {table} ")})

    columns = len(slow_writer.ledger._sql.insert_call.names)
    per = min(repository.ROWS_PER_STATEMENT, max_variables // columns)
    assert count("requests") == 1 and count("responses") == 1 and count("cache_entries") == 1
    assert count("call_log") == -(-len(expected) // per)  # 1, or 2 at the old limit
    assert count("call_tags") == 1
    got = _table(
        db_path,
        "SELECT c.cache_status, c.response_id, t.value FROM call_log c "
        "LEFT JOIN call_tags t ON t.call_id = c.id AND t.name = 'n' WHERE c.id > 1 ORDER BY c.id",
    )
    assert got == expected
    entries = _table(db_path, "SELECT id, response_id FROM cache_entries ORDER BY id")
    assert entries == [(i, i) for i in range(1, 42)]
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    conn.close()


def test_in_a_batch_a_slot_another_process_stored_first_keeps_its_entry(
    slow_writer, api, db_path, monkeypatch
) -> None:
    """As one call at a time did it (recovering): the entry stays the other process's, the
    audit row names the answer this call returned."""
    from llm_ledger.store import repository

    slow_writer.send_message(msgs("warm up"), temperature=0)
    llm_ledger.flush()
    journaled = []
    real = repository.Ledger.record_later

    def capture(self, rec):
        journaled.append(rec)
        return real(self, rec)

    monkeypatch.setattr(repository.Ledger, "record_later", capture)
    answer = slow_writer.send_message(msgs("raced"), temperature=0)  # queued, not written
    (rec,) = journaled
    other = sqlite3.connect(db_path)  # another process stores that slot first
    at = "'2026-01-01 00:00:00'"
    other.execute(
        f"INSERT INTO requests (request_hash, kind, model, request, created_at) "
        f"VALUES (?, 'chat', 'gpt-4o-mini', '{{}}', {at})",
        (rec.request_hash,),
    )
    other.execute(
        f"INSERT INTO responses (id, request_hash, response_hash, response, tokens_estimated, "
        f"created_at) VALUES (100, ?, 'x', '{{}}', 0, {at})",
        (rec.request_hash,),
    )
    other.execute(
        f"INSERT INTO cache_entries (namespace, request_hash, slot, response_id, created_at, "
        f"updated_at) VALUES (?, ?, 0, 100, {at}, {at})",
        (rec.namespace, rec.request_hash),
    )
    other.commit()
    other.close()
    llm_ledger.flush()

    entry = _table(db_path, "SELECT response_id FROM cache_entries WHERE response_id >= 100")
    assert entry == [(100,)]  # theirs, kept
    assert _table(db_path, "SELECT response_id FROM call_log ORDER BY id") == [(1,), (101,)]
    ours = _table(
        db_path,
        "SELECT json_extract(response, '$.choices[0].message') FROM responses WHERE id = 101",
    )
    assert json.loads(ours[0][0]) == answer


def test_tags_stay_on_their_calls_when_the_largest_call_id_is_taken(
    slow_writer, api, db_path
) -> None:
    """A hostile import can leave call_log's largest possible id taken; SQLite then gives
    random ids, and a multi-row insert's ids are no longer the ones after max(id): the
    batch is written call by call instead, each tag on its own call."""
    slow_writer.send_message(msgs("first"), temperature=0)
    llm_ledger.flush()
    conn = sqlite3.connect(db_path)
    conn.execute("UPDATE call_log SET id = 9223372036854775807")
    conn.commit()
    conn.close()
    for n in range(5):
        with llm_ledger.scope(tags={"n": str(n)}):
            slow_writer.send_message(msgs(f"question {n}"), temperature=0)
    llm_ledger.flush()

    got = _table(
        db_path,
        "SELECT t.value, json_extract(q.request, '$.messages[0].content') FROM call_log c "
        "JOIN call_tags t ON t.call_id = c.id AND t.name = 'n' "
        "JOIN requests q ON q.request_hash = c.request_hash ORDER BY t.value",
    )
    assert got == [(str(n), f"question {n}") for n in range(5)]
    assert _table(db_path, "SELECT count(*) FROM call_log") == [(6,)]
    assert not slow_writer.ledger.spool_path.exists()


def test_stores_are_written_when_the_largest_answer_id_is_taken(slow_writer, api, db_path) -> None:
    """The batch's explicit answer ids (max(id) + 1 ...) would overflow: it goes call by call,
    and SQLite picks the ids; every call and answer is written, nothing spooled."""
    slow_writer.send_message(msgs("first"), temperature=0)
    llm_ledger.flush()
    conn = sqlite3.connect(db_path)  # foreign keys off by default here: ids moved together
    big = 9223372036854775807
    for sql in (
        "UPDATE responses SET id = ?",
        "UPDATE cache_entries SET response_id = ?",
        "UPDATE call_log SET response_id = ?",
    ):
        conn.execute(sql, (big,))
    conn.commit()
    conn.close()
    for n in range(5):
        slow_writer.send_message(msgs(f"question {n}"), temperature=0)
    assert slow_writer.send_message(msgs("first"), temperature=0) is not None  # still a hit
    llm_ledger.flush()

    counts = "SELECT (SELECT count(*) FROM call_log), (SELECT count(*) FROM responses), "
    counts += "(SELECT count(*) FROM cache_entries)"
    assert _table(db_path, counts) == [(7, 6, 6)]
    assert _table(db_path, "SELECT count(*) FROM call_log WHERE cache_status = 'hit'") == [(1,)]
    assert not slow_writer.ledger.spool_path.exists()
    assert api.chat_count == 6


# --- a caller's burst: written by the caller, never waiting for another writer ----------


@pytest.fixture
def bursting(client: llm_ledger.OpenAIClient) -> llm_ledger.OpenAIClient:
    """The client with its writer thread asleep: only a caller's burst (or flush) writes."""
    writer = client.ledger._record_writer()
    writer.interval = 3600
    assert writer.inline_batch == 128  # the default on SQLite
    return client


def test_the_call_that_completes_a_burst_of_128_hits_writes_the_queue_itself(
    bursting, api, db_path
) -> None:
    """Two threads taking turns at the GIL (caller and writer) cost each other more than
    the batch itself: in a burst of hits the caller writes every 128th call's queue."""
    c, writer = bursting, bursting.ledger._writer
    for n in range(3):  # three stores: they weigh nothing toward a caller's burst
        c.send_message(msgs(f"q{n}"), temperature=0)
    for _ in range(127):
        c.send_message(msgs("q0"), temperature=0)
    assert writer.pending() == 130
    assert _table(db_path, "SELECT count(*) FROM call_log") == [(0,)]

    c.send_message(msgs("q0"), temperature=0)  # the 128th hit

    assert writer.pending() == 0
    rows = _table(db_path, "SELECT id, cache_status, response_id FROM call_log ORDER BY id")
    assert rows == [(1, "miss", 1), (2, "miss", 2), (3, "miss", 3)] + [
        (i, "hit", 1) for i in range(4, 132)
    ]
    c.send_message(msgs("q0"), temperature=0)  # the count starts again
    assert writer.pending() == 1


def test_a_burst_never_waits_for_another_writer_it_leaves_the_queue_to_the_thread(
    bursting, api, db_path, monkeypatch
) -> None:
    """A call must not wait for SQLite's write lock (another process's copy, prune or
    batch): with it held elsewhere, the burst's write gives up at once, nothing is
    spooled, and the writer thread (or flush) writes the queue once the lock is free."""
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 300)  # a wait would spool, below
    c, writer = bursting, bursting.ledger._writer
    c.send_message(msgs("q"), temperature=0)
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    try:
        for _ in range(128):
            c.send_message(msgs("q"), temperature=0)
        assert writer.pending() == 129  # not written, not lost
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert not c.ledger.spool_path.exists()
    llm_ledger.flush()
    assert _table(db_path, "SELECT cache_status, count(*) FROM call_log GROUP BY 1 ORDER BY 1") == [
        ("hit", 128),
        ("miss", 1),
    ]


def test_a_burst_is_not_written_while_another_thread_writes(bursting, api, db_path) -> None:
    c, writer = bursting, bursting.ledger._writer
    c.send_message(msgs("q"), temperature=0)
    with writer._flush_lock:  # another thread's batch under way: the caller does not wait
        for _ in range(128):
            c.send_message(msgs("q"), temperature=0)
        assert writer.pending() == 129
    llm_ledger.flush()
    assert _table(db_path, "SELECT count(*) FROM call_log") == [(129,)]


def test_a_burst_that_fails_is_left_to_the_thread_the_call_succeeds(
    bursting,
    api,
    db_path,
    monkeypatch,
    logs,  # noqa: F811 -- the fixture
) -> None:
    """Any failure of a caller's burst (here the disk) rolls it back and leaves it queued;
    the call returns its answer and the thread's own write, waiting and spooling as ever,
    takes the queue."""
    from llm_ledger.store import repository

    real = repository.Ledger._sqlite_batch

    def refused(self, recs, *, wait=True):
        if not wait:
            raise sqlite3.OperationalError("disk I/O error")
        return real(self, recs, wait=wait)

    monkeypatch.setattr(repository.Ledger, "_sqlite_batch", refused)
    c, writer = bursting, bursting.ledger._writer
    for _ in range(129):
        assert c.send_message(msgs("q"), temperature=0)["content"] == "answer 1 to: q"
    assert writer.pending() == 129
    assert not c.ledger.spool_path.exists()
    assert [e["event"] for e in logs if e["log_level"] == "error"] == []  # not the call's error
    llm_ledger.flush()  # the thread's way: waits, falls back row by row, spools
    assert _table(db_path, "SELECT count(*) FROM call_log") == [(129,)]


# --- the writer thread's timing: a pause in calls, an urgent call, or the longest wait ---


class _Intervals:
    """The thread's ``stop`` event, scripted: each ``wait(interval)`` is one interval passing
    on a fake clock, with what ``script`` says arrived during it ("poke": a hit's record,
    "urgent": a store's, "": nothing). The thread's first run of ``work`` ends it."""

    def __init__(self, debounced, wake, script: list[str]) -> None:
        self.debounced, self.wake, self.script = debounced, wake, script
        self.clock = 0.0
        self.waits = 0
        self.done = False

    def is_set(self) -> bool:
        return self.done

    def wait(self, seconds: float) -> bool:
        arrived = self.script[self.waits] if self.waits < len(self.script) else ""
        self.waits += 1
        self.clock += seconds
        if arrived:
            self.debounced._urgent = self.debounced._urgent or arrived == "urgent"
            self.wake.set()
        return False


@pytest.mark.parametrize(
    ("max_delay", "script", "runs_after"),
    [
        (None, ["poke", "poke", "poke"], 1),  # no max_delay: `interval` after the first poke
        (1.0, ["poke", "poke", "poke", ""], 4),  # the first interval without a poke
        (1.0, ["poke", "urgent", "poke"], 2),  # a store's record: within `interval`
        (0.25, ["poke"] * 20, 3),  # a burst that never pauses: at most max_delay
    ],
)
def test_the_writer_thread_waits_for_a_pause_unless_a_store_or_the_longest_wait_says_not(
    monkeypatch, max_delay, script, runs_after
) -> None:
    import threading
    import types

    from llm_ledger.store import background

    ran: list[int] = []
    d = background.Debounced("test", 0.1, max_delay=max_delay)
    wake = threading.Event()
    stop = _Intervals(d, wake, script)
    clock = types.SimpleNamespace(monotonic=lambda: stop.clock)  # this module's clock only
    monkeypatch.setattr(background, "time", clock)

    def work() -> None:
        ran.append(stop.waits)
        stop.done = True

    d.work = work  # type: ignore[method-assign]
    wake.set()  # the first poke
    d._run(wake, stop)  # type: ignore[arg-type]

    assert ran == [runs_after]


# --- call ids: version-7 UUIDs, time-ordered (migration 0009) -------------------------


def test_call_ids_are_rfc_9562_version_7_uuids_in_time_order(client, api, db_path) -> None:
    """Time-ordered ids put each new audit row at the end of the unique index on
    call_uuid instead of on a random page of it (docs/benchmarks.md, session seven)."""
    import time
    import uuid

    from llm_ledger import calls

    before = time.time_ns() // 1_000_000
    ids = [calls._uuid7() for _ in range(2000)]
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == 2000
    for u in ids:
        parsed = uuid.UUID(u)
        assert str(parsed) == u  # canonical text: lower-case hex, 8-4-4-4-12
        assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
        assert before <= parsed.int >> 80 <= after  # the first 48 bits: Unix time in ms
    assert [u[:13] for u in ids] == sorted(u[:13] for u in ids)

    for q in ("a", "b", "c", "a"):  # three misses and a hit
        client.send_message(msgs(q), temperature=0)
    llm_ledger.flush()
    rows = [u for (u,) in _table(db_path, "SELECT call_uuid FROM call_log ORDER BY id")]
    assert len(rows) == 4
    assert [uuid.UUID(u).version for u in rows] == [7, 7, 7, 7]
    assert [u[:13] for u in rows] == sorted(u[:13] for u in rows)
