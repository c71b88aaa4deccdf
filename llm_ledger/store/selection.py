"""Reading a ledger in bulk: one consistent snapshot, what an export takes, rows in key order.

The reading side of export and copy (merge.py is the writing side). Rows travel as plain
dicts keyed by column name with Python values (datetime, Decimal; JSON possibly as the
driver's text), read on the driver's cursor by :func:`llm_ledger.store.statements.fetch`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, false, func, select
from sqlalchemy.engine import Connection

from .models import TABLES, Base, CacheEntry, CallLog, CallTag, Request, Response
from .repository import Ledger, flush_all
from .statements import fetch

_REQ: Any = Request.__table__
_RESP: Any = Response.__table__
_ENTRY: Any = CacheEntry.__table__
_LOG: Any = CallLog.__table__
_TAGS: Any = CallTag.__table__

_ENTRY_COLUMNS = [c for c in _ENTRY.c if c.name != "id"]

# --- opening ------------------------------------------------------------------


@contextlib.contextmanager
def opened(ledger_or_location: Ledger | str) -> Iterator[Ledger]:
    """The given Ledger, or one opened (and closed afterwards) for a location."""
    if isinstance(ledger_or_location, Ledger):
        ledger_or_location.flush()  # records this process still has queued (writebehind.py)
        yield ledger_or_location
        return
    flush_all()  # what this process queued for that location is in the tables first
    ledger = Ledger(ledger_or_location)
    try:
        yield ledger
    finally:
        ledger.close()


@contextlib.contextmanager
def snapshot(engine: Engine) -> Iterator[Connection]:
    """A connection whose reads all see one consistent state of the ledger."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN")  # pysqlite would not begin a read transaction itself
        elif engine.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        # MySQL/MariaDB: InnoDB's default REPEATABLE READ already reads from one snapshot.
        try:
            yield conn
        finally:
            conn.rollback()


@contextlib.contextmanager
def indexes_deferred(conn: Connection) -> Iterator[None]:
    """SQLite: the ledger tables' plain (non-unique) indexes are dropped, then built again
    from their own CREATE statements when the block ends, all in the connection's
    transaction. For loading an empty ledger: building an index sorts its rows once,
    where keeping it up to date row by row rewrites its pages over and over. Nothing is
    asked of the target meanwhile, so no query misses them. Other engines: nothing.

    An exception leaves the block without building them: the caller's rollback brings
    them back.
    """
    if conn.dialect.name != "sqlite":
        yield
        return
    if not conn.connection.dbapi_connection.in_transaction:  # type: ignore[union-attr]
        conn.exec_driver_sql("BEGIN")  # pysqlite begins only before DML, not DDL
    names = [
        name
        for table in TABLES
        for _, name, unique, origin, *_ in conn.exec_driver_sql(f"PRAGMA index_list({table})")
        if origin == "c" and not unique
    ]
    created = {
        name: sql
        for name, sql in conn.exec_driver_sql(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index'"
        )
        if name in names
    }
    for name in names:
        conn.exec_driver_sql(f'DROP INDEX "{name}"')
    yield
    for name in names:
        conn.exec_driver_sql(created[name])


# --- what an export takes ----------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """What an export takes; no filter at all means every row of every table.

    Audit rows: ``since <= created_at < until``, ``model``, ``run``. Cache entries:
    ``since <= updated_at < until``, the request's ``model``, and with ``run`` only
    entries whose answer an audit row of that run recorded or served. Responses and
    requests: those the selected rows reference.
    """

    since: datetime | None = None
    until: datetime | None = None
    model: str | None = None
    run: str | None = None
    cache_only: bool = False

    @property
    def everything(self) -> bool:
        return (self.since, self.until, self.model, self.run) == (None,) * 4 and not self.cache_only

    def calls(self) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = []
        if self.since is not None:
            where.append(_LOG.c.created_at >= self.since)
        if self.until is not None:
            where.append(_LOG.c.created_at < self.until)
        if self.model is not None:
            where.append(_LOG.c.model == self.model)
        if self.run is not None:
            where.append(_LOG.c.run == self.run)
        return where

    def exported_calls(self) -> list[ColumnElement[bool]]:
        """The audit rows that go into the bundle (``calls`` also selects --run's entries)."""
        return [false()] if self.cache_only else self.calls()

    def entries(self) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = []
        if self.since is not None:
            where.append(_ENTRY.c.updated_at >= self.since)
        if self.until is not None:
            where.append(_ENTRY.c.updated_at < self.until)
        if self.model is not None:
            where.append(
                _ENTRY.c.request_hash.in_(
                    select(_REQ.c.request_hash).where(_REQ.c.model == self.model)
                )
            )
        if self.run is not None:
            where.append(_ENTRY.c.response_id.in_(select(_LOG.c.response_id).where(*self.calls())))
        return where

    def responses(self) -> list[ColumnElement[bool]]:
        if self.everything:
            return []
        return [
            _RESP.c.id.in_(select(_ENTRY.c.response_id).where(*self.entries()))
            | _RESP.c.id.in_(select(_LOG.c.response_id).where(*self.exported_calls()))
        ]

    def requests(self) -> list[ColumnElement[bool]]:
        if self.everything:
            return []
        return [
            _REQ.c.request_hash.in_(select(_ENTRY.c.request_hash).where(*self.entries()))
            | _REQ.c.request_hash.in_(select(_LOG.c.request_hash).where(*self.exported_calls()))
            | _REQ.c.request_hash.in_(select(_RESP.c.request_hash).where(*self.responses()))
        ]


def count_selected(conn: Connection, sel: Selection) -> dict[str, int]:
    """Rows per table that ``sel`` takes (progress bars, the copy's totals)."""

    def n(table: Any, where: list[ColumnElement[bool]]) -> int:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())

    calls = sel.exported_calls()
    return {
        "requests": n(_REQ, sel.requests()),
        "responses": n(_RESP, sel.responses()),
        "cache_entries": n(_ENTRY, sel.entries()),
        "call_log": n(_LOG, calls),
        "call_tags": n(
            _TAGS, [_TAGS.c.call_id.in_(select(_LOG.c.id).where(*calls))] if calls else []
        ),
    }


# --- reading ------------------------------------------------------------------


def _keyset(
    conn: Connection,
    columns: Sequence[Any],
    key: Any,
    where: Sequence[ColumnElement[bool]],
    batch_size: int,
) -> Iterator[list[dict[str, Any]]]:
    """Rows in key order, one batch per query: no cursor stays open between batches."""
    last = None
    while True:
        stmt = select(*columns).where(*where).order_by(key).limit(batch_size)
        if last is not None:
            stmt = stmt.where(key > last)
        rows = fetch(conn, stmt)
        if not rows:
            return
        last, full = rows[-1][key.name], len(rows) == batch_size
        yield rows
        if not full:
            return


def read_requests(conn: Connection, sel: Selection, batch_size: int) -> Iterator[list[dict]]:
    return _keyset(conn, list(_REQ.c), _REQ.c.request_hash, sel.requests(), batch_size)


def read_responses(conn: Connection, sel: Selection, batch_size: int) -> Iterator[list[dict]]:
    """Response rows with their source ``id`` (cache entries and calls refer to it)."""
    return _keyset(conn, list(_RESP.c), _RESP.c.id, sel.responses(), batch_size)


def read_cache_entries(
    conn: Connection, sel: Selection, batch_size: int, *, keep_id: bool = False
) -> Iterator[list[dict]]:
    """Cache entries, without their surrogate ``id`` unless ``keep_id``."""
    columns = [*_ENTRY_COLUMNS, _ENTRY.c.id]
    for rows in _keyset(conn, columns, _ENTRY.c.id, sel.entries(), batch_size):
        if not keep_id:
            for row in rows:
                del row["id"]
        yield rows


def read_calls(
    conn: Connection, sel: Selection, batch_size: int, *, keep_id: bool = False
) -> Iterator[list[dict]]:
    """Audit rows (without their surrogate id unless ``keep_id``), each with its tag rows
    as ``call_tags``."""
    for rows in _keyset(conn, list(_LOG.c), _LOG.c.id, sel.exported_calls(), batch_size):
        tags: dict[int, dict[str, str]] = {}
        first, last = rows[0]["id"], rows[-1]["id"]
        stmt = select(_TAGS.c.call_id, _TAGS.c.name, _TAGS.c.value).where(
            _TAGS.c.call_id >= first, _TAGS.c.call_id <= last
        )
        for call_id, name, value in conn.execute(stmt):
            tags.setdefault(call_id, {})[name] = value
        for row in rows:
            row["call_tags"] = tags.get(row["id"] if keep_id else row.pop("id"), {})
        yield rows


ID_TABLES = tuple(t for t in TABLES if "id" in Base.metadata.tables[t].c)
"""The tables with a surrogate ``id``."""


def max_ids(conn: Connection) -> dict[str, int]:
    """The highest ``id`` per table with surrogate ids (0 for an empty table)."""
    tables = {"responses": _RESP, "cache_entries": _ENTRY, "call_log": _LOG}
    return {
        name: int(conn.execute(select(func.max(t.c.id))).scalar() or 0)
        for name, t in tables.items()
    }
