"""The floor: the least a ledger must do per call, in raw ``sqlite3``.

Every figure in the benchmark is divided by this one. It is the reference
implementation the issue names, kept deliberately small:

- key: SHA-256 of the request's sorted, compact JSON (model, messages, params);
- hit: one indexed lookup (``cache.key`` is the primary key), the answer parsed
  back from JSON, one audit row inserted, one commit;
- miss (store): the same lookup, the API (a stub) called, the answer serialised,
  one ``cache`` row and one audit row inserted, in one transaction, one commit;
- WAL journal, ``synchronous=NORMAL``, one connection per thread, statements cached
  by ``sqlite3`` itself.

What it leaves out, on purpose: a separate requests table, response identity hashes,
foreign keys, the audit row's 30 columns, prices, namespaces and slots, spooling.
``LedgerSchemaFloor`` below does the ledger's own statements on the ledger's own
tables in raw ``sqlite3``: the gap between it and ``Floor`` is the cost of the schema,
the gap between it and ``send_message`` is the cost of the Python around the SQL.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from llm_ledger import keys
from llm_ledger._version import __version__

SCHEMA = """
CREATE TABLE IF NOT EXISTS cache (
    key TEXT PRIMARY KEY,
    response TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    created_at REAL NOT NULL,
    key TEXT NOT NULL,
    model TEXT NOT NULL,
    status TEXT NOT NULL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    latency_ms REAL
);
"""

Api = Callable[[str, list[dict[str, Any]]], dict[str, Any]]


def connect(path: str) -> sqlite3.Connection:
    """A connection in autocommit mode; transactions are opened explicitly."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA busy_timeout = 30000")
    return conn


@contextlib.contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction on an autocommit connection: committed, or rolled back."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def floor_key(model: str, messages: list[dict[str, Any]], params: dict[str, Any]) -> str:
    body = {"model": model, "messages": messages, "params": params}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _answer(response: dict[str, Any]) -> dict[str, Any]:
    return response["choices"][0]["message"]


class Floor:
    """Response cache + audit log, as little as possible. One connection per thread."""

    def __init__(self, path: str, api: Api, params: dict[str, Any]) -> None:
        self.path = path
        self.api = api
        self.params = {k: v for k, v in params.items() if v is not None}
        self._local = threading.local()
        with connect(path) as conn:
            conn.executescript(SCHEMA)

    @property
    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self.path)
        return conn

    def call(self, model: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
        t0 = time.perf_counter()
        key = floor_key(model, messages, self.params)
        conn = self.conn
        row = conn.execute("SELECT response FROM cache WHERE key = ?", (key,)).fetchone()
        if row is not None:
            response = json.loads(row[0])
            u = response.get("usage") or {}
            conn.execute(
                "INSERT INTO audit (created_at, key, model, status, prompt_tokens, "
                "completion_tokens, latency_ms) VALUES (?, ?, ?, 'hit', ?, ?, ?)",
                (
                    time.time(),
                    key,
                    model,
                    u.get("prompt_tokens"),
                    u.get("completion_tokens"),
                    (time.perf_counter() - t0) * 1000,
                ),
            )
            return _answer(response)
        response = self.api(model, messages)
        text = json.dumps(response, separators=(",", ":"), ensure_ascii=False)
        u = response.get("usage") or {}
        now = time.time()
        with immediate(conn):
            conn.execute(
                "INSERT INTO cache (key, response, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO NOTHING",
                (key, text, now),
            )
            conn.execute(
                "INSERT INTO audit (created_at, key, model, status, prompt_tokens, "
                "completion_tokens, latency_ms) VALUES (?, ?, ?, 'miss', ?, ?, ?)",
                (
                    now,
                    key,
                    model,
                    u.get("prompt_tokens"),
                    u.get("completion_tokens"),
                    (time.perf_counter() - t0) * 1000,
                ),
            )
        return _answer(response)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def seed_floor(path: str, entries: Iterable[tuple[str, str, str, int, int]]) -> None:
    """Bulk-write (key, response_json, model, prompt_tokens, completion_tokens) entries."""
    conn = connect(path)
    conn.executescript(SCHEMA)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("BEGIN")
    now = time.time()
    batch: list[tuple[str, str, str, int, int]] = []

    def flush() -> None:
        conn.executemany(
            "INSERT INTO cache (key, response, created_at) VALUES (?, ?, ?)",
            [(k, r, now) for k, r, _, _, _ in batch],
        )
        conn.executemany(
            "INSERT INTO audit (created_at, key, model, status, prompt_tokens, "
            "completion_tokens, latency_ms) VALUES (?, ?, ?, 'miss', ?, ?, 1.0)",
            [(now, k, m, p, c) for k, _, m, p, c in batch],
        )
        batch.clear()

    for entry in entries:
        batch.append(entry)
        if len(batch) >= 20_000:
            flush()
    flush()
    conn.execute("COMMIT")
    conn.close()


# --- the ledger's statements, on the ledger's tables, without SQLAlchemy --------------

_LOOKUP = (
    "SELECT cache_entries.response_id, responses.response, cache_entries.updated_at, "
    "responses.prompt_tokens, responses.completion_tokens, responses.cached_tokens, "
    "responses.reasoning_tokens, responses.total_tokens, responses.cost_usd "
    "FROM cache_entries JOIN responses ON responses.id = cache_entries.response_id "
    "WHERE cache_entries.namespace = ? AND cache_entries.request_hash = ? "
    "AND cache_entries.slot = ?"
)
_INSERT_REQUEST = (
    "INSERT INTO requests (request_hash, kind, model, request, created_at) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (request_hash) DO NOTHING"
)
_INSERT_RESPONSE = (
    "INSERT INTO responses (request_hash, response_hash, response, prompt_tokens, "
    "completion_tokens, cached_tokens, reasoning_tokens, total_tokens, tokens_estimated, "
    "cost_usd, cost_note, price_version, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_ENTRY = (
    "INSERT INTO cache_entries (namespace, request_hash, slot, response_id, created_at, "
    "updated_at) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (namespace, request_hash, slot) DO NOTHING"
)
_LOG_COLUMNS = (
    "call_uuid, created_at, kind, api_type, endpoint_host, model, namespace, request_hash, "
    "slot, response_id, cache_status, status, attempts, latency_ms, prompt_tokens, "
    "completion_tokens, cached_tokens, reasoning_tokens, total_tokens, tokens_estimated, "
    "items_total, items_hit, error_type, error_message, cost_usd, saved_usd, cost_note, "
    "price_version, run, template, tags, library_version"
)
INSERT_LOG = f"INSERT INTO call_log ({_LOG_COLUMNS}) VALUES ({', '.join('?' * 32)})"


def _insert_store(
    conn: sqlite3.Connection,
    request_row: tuple[Any, ...],
    response_row: tuple[Any, ...],
    log: list[Any],
) -> None:
    """A store's request, answer, cache entry and audit row (naming the answer's id)."""
    conn.execute(_INSERT_REQUEST, request_row)
    rid = int(conn.execute(_INSERT_RESPONSE, response_row).lastrowid or 0)
    now = response_row[-1]
    conn.execute(_INSERT_ENTRY, ("", request_row[0], 0, rid, now, now))
    log[9] = rid
    conn.execute(INSERT_LOG, log)


def _ts() -> str:
    return datetime.now(timezone.utc).replace(tzinfo=None).isoformat(sep=" ")


class LedgerSchemaFloor:
    """What ``send_message`` does to the database, statement for statement, in raw sqlite3.

    Same canonical request and hash (``llm_ledger.keys``), same lookup join, same rows in
    the same four tables, one transaction per call, the ledger's pragmas (foreign keys on).
    Hits do not rewrite the requests row (the cache entry's foreign key proves it exists).
    Prices come from a fixed per-token figure rather than the pricing module.
    """

    PRICE_IN = 0.15e-6
    PRICE_OUT = 0.6e-6

    def __init__(self, path: str, api: Api, params: dict[str, Any]) -> None:
        self.path = path
        self.api = api
        self.params = params
        self._local = threading.local()

    @property
    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self.path)
            conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def call(self, model: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
        t0 = time.perf_counter()
        req = keys.chat_request(messages, model, self.params)
        row = self.conn.execute(_LOOKUP, ("", req.request_hash, 0)).fetchone()
        now = _ts()
        if row is not None:
            response = json.loads(row[1])
            saved = Decimal(str(row[8])) if row[8] is not None else None
            log = self._log_row(req, now, row[0], "hit", 0, row[3], row[4], row[7], t0)
            log[25] = None if saved is None else float(saved)  # saved_usd
            log[24] = 0.0  # cost_usd
            self._write_hit(log)
            return _answer(response)
        response = self.api(model, messages)
        text = keys.canonical_json(response)
        u = response.get("usage") or {}
        p, c = u.get("prompt_tokens"), u.get("completion_tokens")
        cost = (p or 0) * self.PRICE_IN + (c or 0) * self.PRICE_OUT
        log = self._log_row(req, now, 0, "miss", 1, p, c, u.get("total_tokens"), t0)
        log[24] = cost
        request_row = (req.request_hash, "chat", model, req.canonical_json, now)
        response_row = (req.request_hash, keys.hash_json(text), text, p, c, None, None)
        response_row += (u.get("total_tokens"), 0, cost, None, "bench", now)
        self._write_store(request_row, response_row, log)
        return _answer(response)

    def _write_hit(self, log: list[Any]) -> None:
        """A hit's audit row, on its own (autocommit)."""
        self.conn.execute(INSERT_LOG, log)

    def _write_store(
        self, request_row: tuple[Any, ...], response_row: tuple[Any, ...], log: list[Any]
    ) -> None:
        """A store's four rows, in one transaction."""
        conn = self.conn
        with immediate(conn):
            _insert_store(conn, request_row, response_row, log)

    @staticmethod
    def _log_row(
        req: keys.CanonicalRequest,
        now: str,
        rid: int,
        status: str,
        attempts: int,
        p: int | None,
        c: int | None,
        total: int | None,
        t0: float,
    ) -> list[Any]:
        return [
            str(uuid.uuid4()),
            now,
            "chat",
            "openai",
            None,
            req.model,
            "",
            req.request_hash,
            0,
            rid,
            status,
            "ok",
            attempts,
            (time.perf_counter() - t0) * 1000,
            p,
            c,
            None,
            None,
            total,
            0,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            __version__,
        ]

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


class LedgerSchemaJournalFloor(LedgerSchemaFloor):
    """The issue's write-behind design at its cheapest, in raw sqlite3 on the ledger's
    tables: what a hit and a store must cost with this schema and this durability.

    Each call appends its rows to a journal file (one ``os.write`` of one JSON line, no
    fsync) and queues them; every ``BATCH`` calls the caller writes the queue in one
    transaction (the hits' audit rows in one ``executemany``, each store's request,
    answer, entry and audit row), then empties the journal. No writer thread, no lookup
    of queued answers (the workload never asks for an answer it just stored), no
    recovery, prices from a fixed figure: a bound, not a ledger.
    """

    BATCH = 128

    def __init__(self, path: str, api: Api, params: dict[str, Any]) -> None:
        super().__init__(path, api, params)
        self._journal = path + f".floor-journal-{os.getpid()}.jsonl"
        self._fd = os.open(self._journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._queue: list[tuple[list[Any], tuple[Any, ...] | None]] = []

    def _write_hit(self, log: list[Any]) -> None:
        self._queue_call(log, None)

    def _write_store(
        self, request_row: tuple[Any, ...], response_row: tuple[Any, ...], log: list[Any]
    ) -> None:
        self._queue_call(log, (request_row, response_row))

    def _queue_call(self, log: list[Any], answer: tuple[Any, ...] | None) -> None:
        line = json.dumps([log, answer], separators=(",", ":"), ensure_ascii=False)
        os.write(self._fd, (line + "\n").encode())
        self._queue.append((log, answer))
        if len(self._queue) >= self.BATCH:
            self.finish()

    def finish(self) -> None:
        """Write the queue in one transaction, then empty the journal."""
        if not self._queue:
            return
        conn = self.conn
        with immediate(conn):
            self._insert_hits(conn, [log for log, answer in self._queue if answer is None])
            for log, answer in self._queue:
                if answer is not None:
                    _insert_store(conn, *answer, log)
        self._queue.clear()
        os.ftruncate(self._fd, 0)

    @staticmethod
    def _insert_hits(conn: sqlite3.Connection, logs: list[list[Any]]) -> None:
        """The queued hits' audit rows (benchmarks/bound.py puts them elsewhere)."""
        conn.executemany(INSERT_LOG, logs)

    def close(self) -> None:
        self.finish()
        os.close(self._fd)
        os.unlink(self._journal)
        super().close()
