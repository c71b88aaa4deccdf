"""The repository: the only code that records a call (bulk moves are merge.py's).

The client asks it two things: is there a stored answer for this request
(:meth:`Ledger.lookup`), and record this call (:meth:`Ledger.record`). One
call is one transaction: its request, its paid answers, their cache entries,
the audit row and its tags land together or not at all.

Why one module of ~800 lines: everything a call's write depends on is here and nowhere
else: the transaction, the batches written behind the call, and what happens when a write
fails (the spool, records held in memory on a full disk, dead letters, recovery), so that
"a paid answer is never lost" can be checked in one file. The per-thread connections it
runs on are connections.py's; the compiled statements and the audit row's mapping are
statements.py's.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import dataclasses
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Dialect, Engine, bindparam, event, insert, select
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

from ..errors import LedgerUnwritableError
from ..keys import canonical_json, hash_json
from ..log import logger
from ..policy import StoreMode
from ..process import state as _process
from ..records import Answer, CallRecord, Stored
from . import checkpoint, connections, db, journal, spool, writebehind
from .models import CacheEntry, CallLog, CallTag, Request, Response
from .statements import CallInsert, Compiled, Dumped, insert_ignore, stored, upsert, usage_columns

log = logger

_ENTRY: Any = CacheEntry.__table__
_RESP: Any = Response.__table__
_REQ: Any = Request.__table__
_LOG: Any = CallLog.__table__
_TAGS: Any = CallTag.__table__

STORED_COLUMNS = (
    _ENTRY.c.response_id,
    _RESP.c.response,
    _ENTRY.c.updated_at,
    _RESP.c.prompt_tokens,
    _RESP.c.completion_tokens,
    _RESP.c.cached_tokens,
    _RESP.c.reasoning_tokens,
    _RESP.c.total_tokens,
    _RESP.c.cost_usd,
)
"""What a lookup reads: the order :func:`llm_ledger.store.statements.stored` expects."""

_LOOKUP = (
    select(*STORED_COLUMNS)
    .join_from(_ENTRY, _RESP, _RESP.c.id == _ENTRY.c.response_id)
    .where(
        _ENTRY.c.namespace == bindparam("ns"),
        _ENTRY.c.request_hash == bindparam("h"),
        _ENTRY.c.slot == bindparam("slot"),
    )
)
_ENTRY_KEYS = ["namespace", "request_hash", "slot"]
_ENTRY_COLUMNS = [*_ENTRY_KEYS, "response_id", "created_at", "updated_at"]
_REQUEST_COLUMNS = ["request_hash", "kind", "model", "request", "created_at"]
_RESP_COLUMNS = [c.name for c in _RESP.columns if c.name != "id"]


class _Statements:
    """The hot path's statements, compiled once for one dialect (see statements.py)."""

    def __init__(self, dialect: Dialect) -> None:
        self.returning = dialect.name == "postgresql"
        insert_response = insert(_RESP)
        if self.returning:
            insert_response = insert_response.returning(_RESP.c.id)
        self.lookup = Compiled(_LOOKUP, dialect)
        self.request_ignore = Compiled(
            insert_ignore(dialect, _REQ, ["request_hash"]), dialect, _REQUEST_COLUMNS
        )
        self.insert_response = Compiled(insert_response, dialect, _RESP_COLUMNS)
        # SQLite, a writer's batch: responses with the ids given, many rows per statement.
        self.insert_response_ids = Compiled(insert(_RESP), dialect, ["id", *_RESP_COLUMNS])
        self._many: dict[tuple[str, int], str] = {}
        self.entry_ignore = Compiled(
            insert_ignore(dialect, _ENTRY, _ENTRY_KEYS), dialect, _ENTRY_COLUMNS
        )
        self.entry_upsert = Compiled(
            upsert(dialect, _ENTRY, _ENTRY_KEYS, ["response_id", "updated_at"]),
            dialect,
            _ENTRY_COLUMNS,
        )
        self.insert_call = CallInsert(dialect, returning=self.returning)
        self.insert_tags = Compiled(insert(_TAGS), dialect, ["call_id", "name", "value"])
        self.call_exists = Compiled(
            select(_LOG.c.id).where(_LOG.c.call_uuid == bindparam("u")), dialect
        )

    def new_id(self, cur: Any) -> int:
        return int(cur.fetchone()[0]) if self.returning else int(cur.lastrowid)

    def many_sql(self, single: str, n: int) -> str:
        """A one-row ``INSERT ... VALUES (?, ...) [ON CONFLICT ...]`` for ``n`` rows in one
        statement (SQLite)."""
        sql = self._many.get((single, n))
        if sql is None:
            head, _, rest = single.partition(" VALUES ")
            end = rest.index(")") + 1  # the values group: placeholders hold no parenthesis
            group, tail = rest[:end], rest[end:]
            sql = self._many[(single, n)] = f"{head} VALUES {', '.join([group] * n)}{tail}"
        return sql

    def run_rows(self, cur: Any, single: str, rows: list[Any]) -> list[int]:
        """SQLite: ``rows`` (positional) through ``single``, as few statements as SQLite's
        bound-parameter limit allows, at most ROWS_PER_STATEMENT rows each, in order.
        Returns each statement's last rowid (its rows' ids end there, consecutive: the
        write lock is held, so nothing else inserts between them)."""
        if not rows:
            return []
        per = _per_statement(rows)
        last: list[int] = []
        for start in range(0, len(rows), per):
            chunk = rows[start : start + per]
            cur.execute(self.many_sql(single, len(chunk)), [v for r in chunk for v in r])
            last.append(int(cur.lastrowid))
        return last


class Ledger:
    """One ledger database: engine, schema check, lookups, writes, spool."""

    def __init__(
        self,
        location: str,
        *,
        auto_upgrade: bool | None = None,
        spool_dir: str | None = None,
        engine: Engine | None = None,
    ) -> None:
        self.url = db.normalize_url(location)
        self.pid = os.getpid()  # a forked child must not use this process's connections
        self.engine = engine or db.make_engine(location)
        self.dialect = self.engine.dialect.name
        # What a failing database raises: SQLAlchemy's errors, or the driver's own on the hot path.
        self.errors: tuple[type[BaseException], ...] = (
            SQLAlchemyError,
            self.engine.dialect.loaded_dbapi.Error,
            OSError,
        )
        self.revision = db.ensure_schema(self.engine, auto_upgrade=auto_upgrade)
        # A file SQLite ledger gives each thread its own connection for lookups and writes
        # and checkpoints its WAL in the background; on PostgreSQL some threads keep one
        # for lookups (connections.py).
        path = db.sqlite_path(self.url)
        self.conns = connections.ThreadConnections(self.engine, sqlite_file=path is not None)
        self.checkpointer = None if path is None else checkpoint.Checkpointer(path)
        # Records written behind the call (writebehind.py): the default but for an
        # in-memory SQLite database, which dies with the process anyway.
        self.journaled = path is not None or self.dialect != "sqlite"
        self._writer: writebehind.RecordWriter | None = None
        self._writer_lock = threading.Lock()
        # A read through this engine (reports, exports, a user's ``engine.connect()``) sees
        # every call of this process: what is queued is written first. The hot path and the
        # writer use raw connections, which do not fire this.
        event.listen(self.engine, "engine_connect", self._before_read)
        # Records neither the database nor the spool could take (a full disk): kept here,
        # retried before the next API call, by recover() and at exit (docs/reliability.md).
        self._held: list[CallRecord] = []
        self._held_lock = threading.Lock()
        self._sql = _Statements(self.engine.dialect)
        self.spool_path: Path = spool.default_spool_path(self.url, spool_dir)
        # Records journaled by this ledger's writers (writebehind.py), beside the spool.
        self.journal_dir: Path = (
            path.with_name(path.name + ".journal")
            if path is not None
            else self.spool_path.with_suffix(".journal")
        )
        # Spooled calls are written back as soon as the database takes writes again.
        self.recovered_at_open: dict[str, int] | None = None
        _process.live_ledgers.add(self)
        if spool.leftovers(self.spool_path):
            self.recovered_at_open = self.recover()
        # Records of processes that died before writing them (SIGKILL): written once each.
        # Rows this open added to the tables; a journaled row already written is not counted.
        self.journal_recovered = 0
        if self.journal_dir.is_dir():
            try:
                journal.recover(self.journal_dir, self._journal_batch)
            except self.errors as exc:  # the next open tries again; the files stay
                log.error(
                    "ledger.journal_recover_failed", db=db.describe(self.url), error=str(exc)[:300]
                )

    def __repr__(self) -> str:
        return f"Ledger({db.describe(self.url)!r})"

    def close(self) -> None:
        """Write what is queued or held, close this process's connections and (SQLite)
        checkpoint with TRUNCATE, so the ``.db`` file alone holds every row."""
        if self.pid == os.getpid():
            if self._writer is not None:
                self._writer.close()
            self._drain_held()
            self.conns.close()
            if self.checkpointer is not None:
                self.checkpointer.close()
        self.engine.dispose()

    def prepare(self, namespace: str = "") -> None:
        """Open now what this thread's first call would: its lookup connection (with the
        lookup statement prepared on it) and the journal with its writer thread."""
        self.lookup(namespace, "0" * 64)
        if self.journaled:
            self._record_writer()

    # --- reads --------------------------------------------------------------

    def lookup(self, namespace: str, request_hash: str, slot: int = 0) -> Stored | None:
        writer = self._writer
        if writer is not None:
            found = _pending_answer(writer, (namespace, request_hash, slot))
            if found is not None:
                return found
        params = {"ns": namespace, "h": request_hash, "slot": slot}
        lookup = self._sql.lookup
        rows = self._read(lookup.sql, lookup.params(params), one=True)
        return stored(rows[0]) if rows else None

    def lookup_many(self, namespace: str, hashes: Sequence[str]) -> dict[str, Stored]:
        """Slot-0 answers for several requests at once (embedding items), on the same
        connections as :meth:`lookup`: answers still queued come from the queue, and
        nothing queued is written first."""
        found: dict[str, Stored] = {}
        writer = self._writer
        if writer is not None:
            for h in hashes:
                queued = _pending_answer(writer, (namespace, h, 0))
                if queued is not None:
                    found[h] = queued
        wanted = sorted(set(hashes) - set(found))
        for start in range(0, len(wanted), LOOKUP_MANY_CHUNK):
            stmt = (
                select(_ENTRY.c.request_hash, *STORED_COLUMNS)
                .join_from(_ENTRY, _RESP, _RESP.c.id == _ENTRY.c.response_id)
                .where(
                    _ENTRY.c.namespace == namespace,
                    _ENTRY.c.request_hash.in_(wanted[start : start + LOOKUP_MANY_CHUNK]),
                    _ENTRY.c.slot == 0,
                )
            )
            c = stmt.compile(
                dialect=self.engine.dialect, compile_kwargs={"render_postcompile": True}
            )
            values = c.params
            params = [values[n] for n in c.positiontup] if c.positiontup else values
            for row in self._read(c.string, params):
                found[row[0]] = stored(row[1:])
        return found

    def _read(self, sql: str, params: Any, *, one: bool = False) -> list[Any]:
        """Rows of one SELECT: on this thread's own connection (file SQLite; a server's,
        up to LOOKUP_CONNECTIONS threads), else a pooled one, outside any transaction."""
        conns = self.conns
        if conns.sqlite:
            return self._read_on(conns.own(), sql, params, one)
        if conns.lookup_readers:
            read = conns.reader()
            if read is not None:
                try:
                    return self._read_on(read, sql, params, one)
                except self.errors as exc:  # a dropped connection: once more, from the pool
                    conns.drop_reader(read)
                    # Debug only: if the pool fails too, the pipeline logs ledger.read_failed.
                    log.debug(
                        "ledger.lookup_connection_lost",
                        db=db.describe(self.url),
                        error=str(exc)[:300],
                    )
        conn = self.engine.raw_connection()
        try:
            if self.dialect == "postgresql":
                # One statement needs no transaction: in autocommit psycopg sends the SELECT
                # alone, instead of BEGIN, SELECT, ROLLBACK (three round trips, every call).
                driver: Any = conn.driver_connection  # psycopg.Connection
                driver.autocommit = True
                try:
                    return _fetch(conn.cursor(), sql, params, one)
                finally:
                    driver.autocommit = False
            rows = _fetch(conn.cursor(), sql, params, one)
            if self.dialect != "sqlite":
                conn.rollback()  # end the read transaction the driver opened
            return rows
        finally:
            conn.close()

    @staticmethod
    def _read_on(hot: connections.Hot, sql: str, params: Any, one: bool) -> list[Any]:
        with hot.lock:
            return _fetch(hot.conn.cursor(), sql, params, one)

    def has_call(self, call_uuid: str) -> bool:
        with self.engine.connect() as conn:
            return (
                conn.execute(select(_LOG.c.id).where(_LOG.c.call_uuid == call_uuid)).first()
                is not None
            )

    # --- writes -------------------------------------------------------------

    def record(self, rec: CallRecord, *, recovering: bool = False) -> dict[int, Stored]:
        """Write one call. Returns, per answer index, the other writer's entry where a race was lost."""
        with self._transaction() as cur:
            return self._record(cur, rec, recovering=recovering)

    def record_later(self, rec: CallRecord) -> bool:
        """Journal one call's records for the writer thread (writebehind.py); False if they
        cannot be journaled (an in-memory database, a journal that cannot be written, a value
        JSON cannot hold): then the caller writes them itself (:meth:`record_or_spool`).

        Its answers are visible to this process's lookups from here on."""
        if not self.journaled:
            return False
        writer = self._writer or self._record_writer()
        try:
            writer.put(rec)
        except Exception as exc:  # noqa: BLE001 -- the synchronous path takes it, spool and all
            log.warning(
                "ledger.journal_append_failed",
                db=db.describe(self.url),
                journal=str(self.journal_dir),
                error=str(exc)[:300],
            )
            return False
        return True

    def _record_writer(self) -> writebehind.RecordWriter:
        with self._writer_lock:
            if self._writer is None:
                # On SQLite a caller that queued a burst writes it (inline_batch); a server's
                # batch is mostly waiting on the network, which the thread does beside it.
                self._writer = writebehind.RecordWriter(
                    self._record_batch,
                    db.describe(self.url),
                    directory=self.journal_dir,
                    inline_batch=writebehind.INLINE_BATCH if self.conns.sqlite else None,
                    write_now=self._record_batch_now,
                )
            return self._writer

    def flush(self) -> None:
        """Write the records still queued by :meth:`record_later` (a no-op otherwise)."""
        if self._writer is not None:
            self._writer.flush()

    def _before_read(self, conn: Any) -> None:
        writer = self._writer
        if writer is not None and writer.unwritten() and self.pid == os.getpid():
            writer.flush()  # also waits for a batch the writer thread is committing now

    def _record_batch(self, recs: list[CallRecord]) -> None:
        """Journaled records, one transaction; if refused, row by row (spooling what fails).

        Each caller already has its answer: a slot another process stored first keeps that
        process's entry, and the audit row names the answer this call gave (``recovering``).
        """
        try:
            if self.dialect == "sqlite":
                self._sqlite_batch(recs)
            else:
                insert = self._sql.insert_call
                steps: list[Any] = []  # a CallRecord, or consecutive plain hits' values
                for rec in recs:
                    if rec.served_response_id is not None and not rec.answers and not rec.tags:
                        if not steps or not isinstance(steps[-1], list):
                            steps.append([])
                        steps[-1].append(insert.record_params(rec, rec.served_response_id))
                    else:
                        steps.append(rec)
                with self._transaction() as cur:
                    for step in steps:
                        if isinstance(step, list):
                            cur.executemany(insert.sql, step)
                        else:
                            self._record(cur, step, recovering=True)
        except Exception:  # noqa: BLE001 -- sorted out row by row, nothing dropped
            for rec in recs:
                self.record_or_spool(rec, recovering=True)

    def _record_batch_now(self, recs: list[CallRecord]) -> None:
        """A caller's own batch (``Journal._flush_inline``), on SQLite: written as
        :meth:`_sqlite_batch` writes it if the write lock is free now; else, or if it fails
        at all, rolled back and left to the writer thread (``journal.Busy``): a call never
        waits for another writer, nor spools."""
        try:
            self._sqlite_batch(recs, wait=False)
        except Exception as exc:  # noqa: BLE001 -- nothing written; the thread's turn
            raise journal.Busy(str(exc)[:300]) from exc

    def _sqlite_batch(self, recs: list[CallRecord], *, wait: bool = True) -> None:
        """A writer's batch on SQLite: as few statements as the rows allow, in call order.

        Every statement is a GIL handoff while the write lock is held, and every other
        process's writer waits for that lock: so the requests and answers go in first
        (:meth:`_batch_responses`), then each run of consecutive plain calls -- hits, and
        stores whose answers are inserted, tagged or not -- as one multi-row INSERT per
        table (cache entries, audit rows, tags); any other call (a refresh's replace, an
        error's row, a hit on an answer still queued) alone, through :meth:`_record`, as
        before. Each table gets its rows in call order, so ids and winners are what one
        call at a time would have given. The audit rows' values are built before the lock.
        """
        insert = self._sql.insert_call
        plain = [_plain(rec) for rec in recs]
        # Hits' audit rows need no id from this batch: their values are ready now.
        early = {
            id(rec): insert.record_params(rec, rec.served_response_id)
            for rec, p in zip(recs, plain, strict=True)
            if p and not rec.answers
        }
        with self._transaction(wait=wait) as cur:
            ids = self._batch_responses(cur, recs)
            run: list[CallRecord] = []
            for rec, p in zip(recs, plain, strict=True):
                if p:
                    run.append(rec)
                    continue
                self._write_run(cur, run, ids, early)
                run = []
                self._record(cur, rec, recovering=True, written_ids=ids.get(id(rec)))
            self._write_run(cur, run, ids, early)

    def _write_run(
        self,
        cur: Any,
        run: list[CallRecord],
        ids: dict[int, list[int]],
        early: dict[int, Any],
    ) -> None:
        """Consecutive plain calls (see :meth:`_sqlite_batch`): entries, audit rows, tags."""
        if not run:
            return
        st = self._sql
        entries = [
            st.entry_ignore.params(_entry_row(a, rid, rec.created_at))
            for rec in run
            for a, rid in zip(rec.answers, ids.get(id(rec), ()), strict=True)
        ]
        st.run_rows(cur, st.entry_ignore.sql, entries)  # a slot stored first keeps its entry
        rows = []
        for rec in run:
            row = early.get(id(rec))
            if row is None:  # a store: the audit row names its own answer (as recovering)
                response_id = rec.served_response_id
                if rec.primary_answer is not None:
                    response_id = ids[id(rec)][rec.primary_answer]
                row = st.insert_call.record_params(rec, response_id)
            rows.append(row)
        tagged = any(rec.tags for rec in run)
        top = int(cur.execute("SELECT max(id) FROM call_log").fetchone()[0] or 0) if tagged else 0
        lasts = st.run_rows(cur, st.insert_call.sql, rows)
        if not tagged:
            return
        # SQLite gives max(id) + 1, ... unless the largest id is taken (a hostile import):
        # then ids are random, and the batch goes call by call (each its own lastrowid).
        n, per = len(rows), _per_statement(rows)
        if lasts != [top + min(end, n) for end in range(per, n + per, per)]:
            raise _NotConsecutive(f"call_log ids after {top} are not consecutive")
        call_ids = range(top + 1, top + 1 + n)
        tags = [
            st.insert_tags.params({"call_id": call_id, "name": k, "value": v})
            for rec, call_id in zip(run, call_ids, strict=True)
            for k, v in (rec.tags or {}).items()
        ]
        st.run_rows(cur, st.insert_tags.sql, tags)

    def _batch_responses(self, cur: Any, recs: list[CallRecord]) -> dict[int, list[int]]:
        """SQLite: the batch's answers, in order, in as few INSERT statements as possible,
        with their ids given (by ``id()`` of the record: the ids of its answers, in order).

        FTS5 writes its pending index data at every statement that changes it, so one
        statement per answer (the search trigger fires for each) flushed a segment per
        answer: ~half of a stored answer's write. The ids follow the table's highest, read
        after the request rows took the write lock, so they are what the database would
        have given one by one; ``_record`` writes the rest of each call as before.
        """
        with_answers = [rec for rec in recs if rec.answers]
        if not with_answers:
            return {}
        request_ignore = self._sql.request_ignore
        self._sql.run_rows(
            cur,
            request_ignore.sql,
            [request_ignore.params(row) for rec in with_answers for row in _request_rows(rec)],
        )
        base = int(cur.execute("SELECT max(id) FROM responses").fetchone()[0] or 0)
        ids: dict[int, list[int]] = {}
        rows: list[Any] = []
        for rec in with_answers:
            mine = ids[id(rec)] = []
            for a in rec.answers:
                base += 1
                mine.append(base)
                rows.append(self._sql.insert_response_ids.params(_response_row(a, rec, base)))
        self._sql.run_rows(cur, self._sql.insert_response_ids.sql, rows)
        return ids

    def _journal_batch(self, records: list[dict[str, Any]]) -> None:
        """Journaled rows of a dead process, one transaction; a row already written is skipped.

        If the batch is refused, each row goes the spool's way (``_recover_one``): written,
        dead-lettered, or spooled to wait for the database, so the journal segment can go.
        """
        recs = [writebehind.from_journal(data) for data in records]
        written = 0
        try:
            with self._transaction() as cur:
                for rec in recs:
                    if not self._sql.call_exists.run(cur, {"u": rec.call_uuid}).fetchone():
                        self._record(cur, rec, recovering=True)
                        written += 1
        except Exception:  # noqa: BLE001 -- sorted out row by row below
            for rec in recs:
                outcome = self._recover_one(rec)
                if outcome == "written":
                    self.journal_recovered += 1
                elif outcome == "pending":
                    spool.append(self.spool_path, rec)
        else:
            self.journal_recovered += written

    def record_or_spool(self, rec: CallRecord, *, recovering: bool = False) -> dict[int, Stored]:
        """Write one call; if that fails for any reason, spool it so the paid answer is not lost.

        Any exception, not only the database's: a value the ledger cannot serialise (a NaN
        in a custom client's answer) or a bug in the mapping must not drop a paid answer.
        """
        try:
            return self.record(rec, recovering=recovering)
        except Exception as exc:  # noqa: BLE001 -- see the docstring
            try:
                spool.append(self.spool_path, rec)
            except OSError as spool_exc:  # a full disk: hold it, stop paying for more
                self._hold(rec, exc, spool_exc)
                return {}
            except Exception as spool_exc:  # noqa: BLE001 -- not JSON at all
                # Nowhere durable to put it, ever: the caller still gets its answer, and the
                # log carries the whole record so it can be replayed by hand.
                log.critical(
                    "ledger.spool_failed",
                    db=db.describe(self.url),
                    call_uuid=rec.call_uuid,
                    error=str(exc)[:300],
                    spool_error=str(spool_exc)[:300],
                    record=rec.to_json(),
                )
                return {}
            log.error(
                "ledger.write_failed",
                db=db.describe(self.url),
                call_uuid=rec.call_uuid,
                request_hash=rec.request_hash,
                error=str(getattr(exc, "orig", exc))[:300],
                spool=str(self.spool_path),
            )
            return {}

    # --- when neither the database nor the spool can be written ---------------------------

    def _hold(self, rec: CallRecord, exc: BaseException, spool_exc: BaseException) -> None:
        """Keep a record nothing durable took, in memory; the log event carries it whole (a
        JSON log line of it is a spool line ``recover`` reads, see docs/reliability.md)."""
        with self._held_lock:
            keep = bool(rec.answers) or len(self._held) < HELD_HITS_MAX
            if keep:
                self._held.append(rec)
            held = len(self._held)
        log.critical(
            "ledger.spool_failed",
            db=db.describe(self.url),
            call_uuid=rec.call_uuid,
            error=str(getattr(exc, "orig", exc))[:300],
            spool_error=str(spool_exc)[:300],
            held_in_memory=held if keep else None,
            record=rec.to_json(),
        )

    @property
    def held(self) -> int:
        """How many records only this process's memory holds (see :meth:`check_writable`)."""
        return len(self._held)

    def _drain_held(self) -> int:
        """Write held records to the database, else to the spool; returns how many are left."""
        if not self._held:
            return 0
        if self.checkpointer is not None:
            self.checkpointer.truncate()  # a full disk: the WAL's space goes back to the file
        with self._held_lock:
            recs, self._held = self._held, []
        left: list[CallRecord] = []
        db_ok = spool_ok = True
        for rec in recs:
            if db_ok:
                try:
                    self.record(rec)
                    continue
                except Exception:  # noqa: BLE001 -- whatever it is, the spool is next
                    db_ok = False
            if spool_ok:
                try:
                    spool.append(self.spool_path, rec)
                    continue
                except OSError:
                    spool_ok = False
            left.append(rec)
        with self._held_lock:
            self._held[:0] = left
            n = len(self._held)
        if len(recs) > len(left):
            log.warning(
                "ledger.held_written", db=db.describe(self.url), written=len(recs) - len(left)
            )
        return n

    def check_writable(self) -> None:
        """Called before an API call: refuse it while paid answers are held in memory only.

        Held answers are retried first, so the call goes ahead as soon as the database or the
        spool takes writes again. A call refused here was not sent and costs nothing.
        """
        if not self._held:
            return
        left = self._drain_held()
        if left:
            raise LedgerUnwritableError(
                f"neither the ledger {db.describe(self.url)} nor its spool {self.spool_path} "
                f"can be written (is the disk full?); {left} paid answers are held in this "
                "process's memory only, so no further API call is made until one of them "
                "takes writes again: free space or fix the database, then call again (the held "
                "answers are written first)"
            )

    def _record(
        self,
        cur: Any,
        rec: CallRecord,
        *,
        recovering: bool = False,
        written_ids: list[int] | None = None,
    ) -> dict[int, Stored]:
        """All of one call's writes, on one DBAPI cursor inside one transaction.

        ``recovering``: a spooled call whose caller already got its own answer; if another
        call cached that slot meanwhile, the audit row still names the answer given.
        ``written_ids``: its request and answer rows are written already, its answers with
        these ids (a SQLite batch, :meth:`_batch_responses`).
        """
        st, now = self._sql, rec.created_at
        if written_ids is None and (rec.served_response_id is None or rec.answers):
            # A hit's request row exists already: its cache entry references it.
            st.request_ignore.run_many(cur, _request_rows(rec))
        winners: dict[int, Stored] = {}
        response_ids: list[int] = []
        for i, a in enumerate(rec.answers):
            if written_ids is None:
                st.insert_response.run(cur, _response_row(a, rec))
                rid = st.new_id(cur)
            else:
                rid = written_ids[i]
            response_ids.append(rid)
            entry = _entry_row(a, rid, now)
            if a.store is StoreMode.INSERT:
                if st.entry_ignore.run(cur, entry).rowcount != 1:
                    # Another writer stored this slot first: the caller gets their answer.
                    row = st.lookup.run(
                        cur, {"ns": a.namespace, "h": a.request_hash, "slot": a.slot}
                    ).fetchone()
                    if row is not None:
                        winners[i] = stored(row)
            elif a.store is StoreMode.REPLACE:
                st.entry_upsert.run(cur, entry)
        response_id = rec.served_response_id
        if response_id is None and rec.cache_status == "hit" and rec.items_total is None:
            # Served from an answer this process had journaled, written just before (the
            # queue is written in order): the row names the entry it was served from.
            row = st.lookup.run(
                cur, {"ns": rec.namespace, "h": rec.request_hash, "slot": rec.slot or 0}
            ).fetchone()
            response_id = None if row is None else row[0]
        if rec.primary_answer is not None:
            p = rec.primary_answer
            lost_race = p in winners and not recovering
            response_id = winners[p].response_id if lost_race else response_ids[p]
        cur.execute(st.insert_call.sql, st.insert_call.record_params(rec, response_id))
        if rec.tags:
            call_id = st.new_id(cur)
            st.insert_tags.run_many(
                cur, [{"call_id": call_id, "name": k, "value": v} for k, v in rec.tags.items()]
            )
        return winners

    @contextlib.contextmanager
    def _transaction(self, *, wait: bool = True) -> Iterator[Any]:
        """One transaction on a DBAPI cursor: commit on success, roll back on error.

        File SQLite: this thread's connection, then a background checkpoint; ``wait=False``:
        "database is locked" at once if another writer holds the lock. Otherwise a pooled
        connection.
        """
        if self.conns.sqlite:
            hot = self.conns.own()
            with hot.lock:
                conn = hot.conn
                cur = conn.cursor()
                try:
                    connections.begin_write(conn, db.SQLITE_BUSY_TIMEOUT_MS, wait=wait)
                    yield cur
                    conn.commit()
                except BaseException:
                    try:
                        conn.rollback()
                    except Exception:  # noqa: BLE001 -- broken: open another next time
                        self.conns.forget_own()
                    raise
                finally:
                    cur.close()
            self.checkpointer.wrote()  # type: ignore[union-attr]
            return
        conn = self.engine.raw_connection()
        try:
            cur = conn.cursor()
            try:
                yield cur
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
            finally:
                cur.close()
        finally:
            conn.close()

    # --- spool --------------------------------------------------------------

    def recover(self) -> dict[str, int]:
        """Write spooled records into the ledger, each exactly once.

        The spool is first moved aside (``spool.claim``), so a record another thread spools
        meanwhile lands in a new file and is never deleted unread. Records the database still
        refuses for now go back to the spool (``pending``); a record it refuses for good (a
        value its column cannot hold) goes to the dead-letter file ``<spool>.dead.jsonl``
        with the reason and recovery goes on (then ``dead_lettered`` is in the counts).
        Unreadable lines are kept beside it in ``<spool>.unreadable``. Claimed files left by a
        recovery that was killed are finished too: recovery is idempotent by ``call_uuid``.
        """
        counts = {"written": 0, "already_present": 0, "unreadable": 0, "pending": 0}
        dead = 0
        with _process.recover_lock:
            self._drain_held()
            claimed = spool.orphaned_claims(self.spool_path)
            mine = spool.claim(self.spool_path)
            if mine is not None:
                claimed.append(mine)
            buried = (
                {d.call_uuid for d in spool.dead_letters(self.spool_path)} if claimed else set()
            )
            try:
                for path in claimed:
                    records, bad = spool.read(path)
                    counts["unreadable"] += bad
                    pending: list[CallRecord] = []
                    for rec in records:
                        if pending:  # the database is failing: keep the rest for next time
                            pending.append(rec)
                        elif rec.call_uuid in buried:
                            dead += 1  # a killed recovery buried it already
                        else:
                            outcome = self._recover_one(rec)
                            if outcome == "dead":
                                dead += 1
                                buried.add(rec.call_uuid)
                            elif outcome == "pending":
                                pending.append(rec)
                            else:
                                counts[outcome] += 1
                    for rec in pending:
                        spool.append(self.spool_path, rec)
                    counts["pending"] += len(pending)
                    spool.retire(
                        path,
                        keep_as=self.spool_path.with_name(self.spool_path.name + ".unreadable")
                        if bad
                        else None,
                    )
            finally:  # a claim not finished (an error) stays a leftover for the next recovery
                for path in claimed:
                    spool.release(path)
            if dead:
                counts["dead_lettered"] = dead
            if counts["written"] or counts["already_present"] or counts["unreadable"] or dead:
                log.warning("ledger.recovered", db=db.describe(self.url), **counts)
        return counts

    def _recover_one(self, rec: CallRecord) -> str:
        """One spooled record: ``written``, ``already_present``, ``dead`` or ``pending``."""
        try:
            with self._transaction() as cur:
                if self._sql.call_exists.run(cur, {"u": rec.call_uuid}).fetchone():
                    return "already_present"
                self._record(cur, rec, recovering=True)
                return "written"
        except Exception as exc:  # noqa: BLE001 -- classified below
            if not self._refused_for_good(exc):
                log.error(
                    "ledger.recover_failed",
                    db=db.describe(self.url),
                    error=str(getattr(exc, "orig", exc))[:300],
                    spool=str(self.spool_path),
                )
                return "pending"
            try:
                if self.has_call(rec.call_uuid):  # another recovery wrote it meanwhile
                    return "already_present"
            except self.errors:
                return "pending"
            spool.bury(self.spool_path, rec, exc)
            log.error(
                "ledger.dead_letter",
                db=db.describe(self.url),
                call_uuid=rec.call_uuid,
                error=str(getattr(exc, "orig", exc))[:300],
                dead_letters=str(spool.dead_letter_path(self.spool_path)),
            )
            return "dead"

    def _refused_for_good(self, exc: BaseException) -> bool:
        """Will the database refuse this record however often it is tried? Data it cannot
        hold (NUL on PostgreSQL, a value too long on MariaDB), a constraint it breaks, or a
        record that cannot be written at all (not JSON, a field missing); not a lost
        connection, a lock or a full disk."""
        if isinstance(exc, (DataError, IntegrityError)):
            return True
        dbapi = self.engine.dialect.loaded_dbapi
        if isinstance(getattr(exc, "orig", exc), (dbapi.DataError, dbapi.IntegrityError)):
            return True
        return not isinstance(exc, self.errors)


def _pending_answer(writer: writebehind.RecordWriter, key: tuple[str, str, int]) -> Stored | None:
    """An answer this process journaled and has not written yet (a copy: the caller may
    edit what it gets). See :func:`writebehind.cached_answers`."""
    st: Stored | None = writer.find(key)
    return None if st is None else dataclasses.replace(st, response=copy.deepcopy(st.response))


def open_ledger(location: str, *, spool_dir: str | None = None) -> Ledger:
    """The shared :class:`Ledger` for a location (one engine per database per process).

    The registry is process state (``process.state.ledgers``): a forked child starts empty.
    """
    key = (db.normalize_url(location), spool_dir)
    with _process.ledgers_lock:
        ledger = _process.ledgers.get(key)
        if ledger is None or ledger.pid != os.getpid():
            ledger = _process.ledgers[key] = Ledger(location, spool_dir=spool_dir)
        return ledger


class _NotConsecutive(Exception):
    """A multi-row insert's ids were not max(id) + 1, ...: the batch goes call by call."""


def _plain(rec: CallRecord) -> bool:
    """A call a SQLite batch writes with its neighbours (:meth:`Ledger._sqlite_batch`): a
    hit on a stored answer, or a call whose answers are all inserted."""
    if rec.answers:
        return all(a.store is StoreMode.INSERT for a in rec.answers)
    return rec.served_response_id is not None


def _per_statement(rows: list[Any]) -> int:
    return max(1, min(ROWS_PER_STATEMENT, SQLITE_MAX_VARIABLES // len(rows[0])))


def _entry_row(a: Answer, response_id: int, now: Any) -> dict[str, Any]:
    """An answer's ``cache_entries`` row, naming the response stored for it."""
    return {
        "namespace": a.namespace,
        "request_hash": a.request_hash,
        "slot": a.slot,
        "response_id": response_id,
        "created_at": now,
        "updated_at": now,
    }


def _request_rows(rec: CallRecord) -> list[dict[str, Any]]:
    """The ``requests`` rows of a call: its own request and its answers' (insert-or-ignore)."""
    body = rec.request if rec.request_text is None else Dumped(rec.request_text)
    requests = {rec.request_hash: (rec.kind, rec.model, body)}
    for a in rec.answers:
        requests.setdefault(a.request_hash, (a.kind, a.model, a.request))
    now = rec.created_at
    return [
        {"request_hash": h, "kind": k, "model": m, "request": body, "created_at": now}
        for h, (k, m, body) in requests.items()
    ]


def _response_row(a: Answer, rec: CallRecord, id_: int | None = None) -> dict[str, Any]:
    """An answer's ``responses`` row; serialised once: its hash and its column (journaled:
    fixed when journaled)."""
    text = a.response_text if a.response_text is not None else canonical_json(a.response)
    return {
        "id": id_,
        "request_hash": a.request_hash,
        "response_hash": hash_json(text),
        "response": Dumped(text),
        **usage_columns(a.usage),
        "cost_usd": a.cost_usd,
        "cost_note": a.cost_note,
        "price_version": a.price_version,
        "created_at": rec.created_at,
    }


def _fetch(cur: Any, sql: str, params: Any, one: bool) -> list[Any]:
    try:
        cur.execute(sql, params)
        if one:
            row = cur.fetchone()
            return [] if row is None else [row]
        return list(cur.fetchall())
    finally:
        cur.close()


LOOKUP_MANY_CHUNK = 500  # request hashes per IN (...): inside every engine's parameter limit
ROWS_PER_STATEMENT = 200  # a writer's batch on SQLite: rows per multi-row INSERT at most,
# fewer if their values would pass SQLite's bound-parameter limit (32,766 from 3.32, 999 before)
SQLITE_MAX_VARIABLES = 32_766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999
HELD_HITS_MAX = 10_000  # beyond this, held hit rows (no paid answer) are only logged


@atexit.register
def _close_at_exit() -> None:
    """Interpreter exit: every ledger of this process writes what it queued or holds and
    checkpoints (TRUNCATE), so an SQLite ``.db`` file alone is complete after a normal exit.
    Records still refused are in the log (``ledger.spool_failed`` events)."""
    for ledger in list(_process.live_ledgers):
        if ledger.pid != os.getpid():
            continue
        try:
            ledger.close()
        except Exception as exc:  # noqa: BLE001 -- never fail the host's exit
            log.error("ledger.close_failed", db=db.describe(ledger.url), error=str(exc)[:300])
        if ledger.held:
            log.critical(
                "ledger.held_lost_at_exit",
                db=db.describe(ledger.url),
                records=ledger.held,
                note="each is in a ledger.spool_failed log event; see docs/reliability.md",
            )


def flush_all() -> None:
    """Write what every ledger of this process has queued (``writes="journal"``), so a
    reader on another connection, or another process, sees every call made so far."""
    for ledger in list(_process.live_ledgers):
        if ledger.pid == os.getpid():
            ledger.flush()


def close_all() -> None:
    with _process.ledgers_lock:
        for ledger in _process.ledgers.values():
            ledger.close()
        _process.ledgers.clear()


__all__ = ["Ledger", "open_ledger", "flush_all", "close_all"]
