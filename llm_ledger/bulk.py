"""The repository's bulk side: batched reads and writes of whole tables.

``repository.Ledger`` writes one call at a time; this module is the rest of the
repository layer, for the operations that move many rows at once: reading a
consistent snapshot in key order (export, copy), merging rows from another
ledger (import, copy, pickle import), and ``prune`` / ``vacuum``. It is the
only other code that writes SQL for the ledger's tables.

Rows travel as plain dicts keyed by column name with Python values (datetime,
Decimal, dict). Surrogate ids never cross ledgers in a merge: a response row carries
its *source* ``id`` so that cache entries and audit rows can be remapped to the
target's ids; everything else is matched by its natural identity:

- requests by ``request_hash``;
- responses by ``(request_hash, response_hash)``;
- cache entries by ``(namespace, request_hash, slot)`` (an existing target entry wins);
- audit rows by ``call_uuid`` (their tags travel with them as ``call_tags``).

The one exception is a copy of a whole ledger into an empty one (``Merger(keep_ids=...)``):
it writes the rows as they are, ids included, so nothing has to be mapped or remembered.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from operator import itemgetter
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ColumnElement,
    DateTime,
    Engine,
    and_,
    exists,
    false,
    func,
    insert,
    literal,
    select,
    text,
)
from sqlalchemy.engine import Connection

from . import db
from .log import logger
from .models import CacheEntry, CallLog, CallTag, Money, Request, Response
from .repository import Ledger

log = logger

_REQ: Any = Request.__table__
_RESP: Any = Response.__table__
_ENTRY: Any = CacheEntry.__table__
_LOG: Any = CallLog.__table__
_TAGS: Any = CallTag.__table__

TABLES = ("requests", "responses", "cache_entries", "call_log", "call_tags")
"""Every ledger table, parents first."""
MERGED = ("requests", "responses", "cache_entries", "calls", "call_tags")
"""The kinds of rows a merge counts; ``calls`` are ``call_log`` rows."""

_ENTRY_COLUMNS = [c for c in _ENTRY.c if c.name != "id"]
_IN_CHUNK = 1000  # values per IN (...) list: well inside every engine's bind-parameter limit


# --- opening ------------------------------------------------------------------


@contextlib.contextmanager
def opened(ledger_or_location: Ledger | str) -> Iterator[Ledger]:
    """The given Ledger, or one opened (and closed afterwards) for a location."""
    if isinstance(ledger_or_location, Ledger):
        ledger_or_location.flush()  # hit rows this process still has queued (hitlog.py)
        yield ledger_or_location
        return
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


# --- values on the hot path ---------------------------------------------------
#
# Bulk reads fetch the driver's tuples and bulk writes run one compiled statement
# with executemany on the same DBAPI connection (inside the caller's transaction):
# SQLAlchemy's per-row machinery costs several times what the database does. The
# conversions its column types would make are done here, for the kinds that need them.


def _read_datetime(v: Any) -> Any:
    return datetime.fromisoformat(v) if isinstance(v, str) else v


def _read_money(v: Any) -> Any:
    if v is None or isinstance(v, Decimal):
        return v
    return Decimal(str(round(float(v), 10)))  # as models.Money reads SQLite's REAL


def _read_bool(v: Any) -> Any:
    return v if v is None or isinstance(v, bool) else bool(v)


def _reader(column: Any) -> Callable[[Any], Any] | None:
    """Driver value -> the Python value SQLAlchemy would give. JSON stays as the driver
    gives it (text on SQLite/MariaDB, already parsed on PostgreSQL): writers take both."""
    kind = column.type
    if isinstance(kind, Money):
        return _read_money
    if isinstance(kind, DateTime):
        return _read_datetime
    if isinstance(kind, Boolean):
        return _read_bool
    return None


def _json_text(v: Any) -> Any:
    return v if v is None or isinstance(v, str) else db._dumps(v)


def _sqlite_datetime(v: Any) -> Any:
    # SQLAlchemy's SQLite storage format, so its reads parse it back.
    return v.isoformat(sep=" ", timespec="microseconds") if isinstance(v, datetime) else v


def _sqlite_money(v: Any) -> Any:
    return None if v is None else float(v)


def _writer(column: Any, sqlite: bool) -> Callable[[Any], Any] | None:
    kind = column.type
    if isinstance(kind, JSON):
        return _json_text
    if sqlite and isinstance(kind, DateTime):
        return _sqlite_datetime
    if sqlite and isinstance(kind, Money):
        return _sqlite_money
    return None


def fetch(conn: Connection, stmt: Any) -> list[dict[str, Any]]:
    """Rows of a select of table columns, as dicts of Python values (JSON possibly as text)."""
    result = conn.execute(stmt)
    try:
        names = list(result.keys())
        raw = result.cursor.fetchall() if result.cursor is not None else []
    finally:
        result.close()
    convs = [(n, f) for n, c in zip(names, stmt.selected_columns, strict=True) if (f := _reader(c))]
    rows = []
    for values in raw:
        row = dict(zip(names, values, strict=True))
        for n, f in convs:
            row[n] = f(row[n])
        rows.append(row)
    return rows


class _Insert:
    """One INSERT compiled for the target's dialect, run with executemany on the DBAPI cursor."""

    def __init__(self, conn: Connection, stmt: Any, table: Any, keys: list[str]) -> None:
        dialect = conn.dialect
        compiled = stmt.compile(dialect=dialect, column_keys=keys)
        self.conn, self.sql, self.positional = conn, str(compiled), dialect.positional
        self.order = list(compiled.positiontup) if dialect.positional else keys
        self.values = itemgetter(*self.order)  # every table has several columns: a tuple
        sqlite = dialect.name == "sqlite"
        self.convs = [
            (i, f) for i, k in enumerate(self.order) if (f := _writer(table.c[k], sqlite))
        ]

    def run(self, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        params: list[Any] = []
        for row in rows:
            values = list(self.values(row))
            for i, f in self.convs:
                values[i] = f(values[i])
            params.append(values if self.positional else dict(zip(self.order, values, strict=True)))
        cursor = self.conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(self.sql, params)
        finally:
            cursor.close()


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


ID_TABLES = ("responses", "cache_entries", "call_log")
"""The tables with a surrogate ``id``."""


def max_ids(conn: Connection) -> dict[str, int]:
    """The highest ``id`` per table with surrogate ids (0 for an empty table)."""
    tables = {"responses": _RESP, "cache_entries": _ENTRY, "call_log": _LOG}
    return {
        name: int(conn.execute(select(func.max(t.c.id))).scalar() or 0)
        for name, t in tables.items()
    }


# --- merging ------------------------------------------------------------------


@dataclass
class Tally:
    added: int = 0
    already_present: int = 0
    refused: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "added": self.added,
            "already_present": self.already_present,
            "refused": self.refused,
        }


@dataclass
class MergeResult:
    """Per kind of row: added, already present, refused; and why rows were refused."""

    tallies: dict[str, Tally] = field(default_factory=lambda: {k: Tally() for k in MERGED})
    reasons: Counter[str] = field(default_factory=Counter)

    def refuse(self, kind: str, reason: str, n: int = 1) -> None:
        self.tallies[kind].refused += n
        self.reasons[f"{kind}: {reason}"] += n

    def as_dict(self) -> dict[str, Any]:
        """Tallies per kind, totals over records (tags are part of their call), reasons."""
        out: dict[str, Any] = {k: t.as_dict() for k, t in self.tallies.items()}
        records = [t for k, t in self.tallies.items() if k != "call_tags"]
        out["added"] = sum(t.added for t in records)
        out["already_present"] = sum(t.already_present for t in records)
        out["refused"] = sum(t.refused for t in records)
        out["refused_reasons"] = dict(sorted(self.reasons.items()))
        out["rows_written"] = sum(t.added for t in self.tallies.values())
        return out


class Merger:
    """Merges rows from another ledger into this one, on a connection inside one transaction.

    Feed parents before children (requests, responses, cache entries, calls), each kind
    in batches. Rows whose references cannot be resolved are refused, never half-written.
    A table that was empty when the merge began is not queried for what it holds: only
    this merge's own rows can be there, and they are remembered.

    ``verbatim`` (see ``keep_ids``): the target was empty and rows keep their ids.
    """

    def __init__(
        self,
        target: Ledger,
        conn: Connection,
        *,
        source_unique: bool = False,
        keep_ids: Mapping[str, int] | None = None,
    ) -> None:
        """``source_unique``: the rows come from a ledger, whose constraints already make
        request hashes, cache keys and call uuids unique, so a merge into an empty table
        need not remember them.

        ``keep_ids``: the rows are a whole ledger's, read with their ids (cache entries and
        calls too: ``keep_id=True``), and this is its :func:`max_ids`. If every target table
        is empty, the merge is a verbatim copy: rows keep their ids (so nothing is mapped or
        remembered and memory stays flat however large the copy) and identical responses
        stay apart, as they are in the source. Otherwise it is an ordinary merge.
        """
        self.conn = conn
        self.result = MergeResult()
        self.response_ids: dict[int, int] = {}  # source response id -> target response id
        self._fresh = {
            t.name: conn.execute(select(literal(1)).select_from(t).limit(1)).first() is None
            for t in (_REQ, _RESP, _ENTRY, _LOG)
        }
        self.verbatim = (
            keep_ids is not None
            and all(self._fresh.values())
            and conn.execute(select(literal(1)).select_from(_TAGS).limit(1)).first() is None
        )
        self._refused_ids: set[int] = set()  # verbatim: source ids of refused responses
        self._mine: dict[str, dict[Any, Any]] = {t: {} for t in self._fresh}
        # Tables whose rows must be remembered to catch a key seen again later in the merge.
        self._remember = {
            t: fresh and not self.verbatim and (t == _RESP.name or not source_unique)
            for t, fresh in self._fresh.items()
        }
        ignore = target.insert_ignore
        names = (lambda t: [c.name for c in t.c]) if self.verbatim else _names
        self._insert = {
            "requests": _Insert(
                conn, ignore(_REQ, ["request_hash"]), _REQ, [c.name for c in _REQ.c]
            ),
            "responses": _Insert(conn, insert(_RESP), _RESP, names(_RESP)),
            "cache_entries": _Insert(
                conn, ignore(_ENTRY, ["namespace", "request_hash", "slot"]), _ENTRY, names(_ENTRY)
            ),
            "call_log": _Insert(conn, insert(_LOG), _LOG, names(_LOG)),
            "call_tags": _Insert(conn, insert(_TAGS), _TAGS, [c.name for c in _TAGS.c]),
        }
        if self.verbatim and keep_ids is not None and conn.dialect.name == "postgresql":
            # Explicit ids leave the sequences behind; move them past the copy's ids now
            # (setval is not transactional), so no later insert, not even a concurrent one,
            # takes an id the copy writes. MariaDB's AUTO_INCREMENT and SQLite's rowid
            # follow the highest id written by themselves.
            for name in ID_TABLES:
                if keep_ids.get(name):
                    conn.execute(
                        text("SELECT setval(pg_get_serial_sequence(:t, 'id'), :n)"),
                        {"t": name, "n": keep_ids[name]},
                    )

    def _present(
        self, table: Any, column: Any, values: Iterable[Any], *extra: Any
    ) -> dict[Any, Any]:
        """{value: [(value, *extra), ...]} for the rows whose ``column`` is one of ``values``.

        Only this merge's rows if the table was empty at the start; else asked in chunks.
        """
        mine = self._mine[table.name]
        if self._fresh[table.name]:
            return {v: mine[v] for v in values if v in mine}
        wanted = sorted(set(values))
        found: dict[Any, Any] = {}
        for i in range(0, len(wanted), _IN_CHUNK):
            stmt = select(column, *extra).where(column.in_(wanted[i : i + _IN_CHUNK]))
            for row in self.conn.execute(stmt):
                found.setdefault(row[0], []).append(tuple(row))
        return found

    def _max_id(self, table: Any) -> int:
        return int(self.conn.execute(select(func.max(table.c.id))).scalar() or 0)

    def requests(self, rows: Sequence[dict[str, Any]]) -> None:
        tally = self.result.tallies["requests"]
        present = self._present(_REQ, _REQ.c.request_hash, [r["request_hash"] for r in rows])
        new: dict[str, dict[str, Any]] = {}
        for row in rows:
            h = row["request_hash"]
            if h in present or h in new:
                tally.already_present += 1
            else:
                new[h] = row
        self._insert["requests"].run(list(new.values()))
        if self._remember["requests"]:
            self._mine["requests"].update({h: [(h,)] for h in new})
        tally.added += len(new)

    def responses(
        self,
        rows: Sequence[dict[str, Any]],
        refused: Callable[[dict[str, Any]], str | None] = lambda r: None,
    ) -> None:
        """Rows carry their source ``id``; ``refused`` may name a reason to refuse a row."""
        tally = self.result.tallies["responses"]
        if self.verbatim:
            kept = []
            for row in rows:
                reason = refused(row)
                if reason is None:
                    kept.append(row)
                else:
                    self.result.refuse("responses", reason)
                    self._refused_ids.add(row["id"])
            self._insert["responses"].run(kept)
            tally.added += len(kept)
            return
        known = self._response_ids({r["response_hash"] for r in rows})
        new: dict[tuple[str, str], list[int]] = {}
        to_insert = []
        for row in rows:
            reason = refused(row)
            if reason is not None:
                self.result.refuse("responses", reason)
                continue
            k = (row["request_hash"], row["response_hash"])
            if k in known:
                self.response_ids[row["id"]] = known[k]
                tally.already_present += 1
            elif k in new:
                new[k].append(row["id"])
                tally.already_present += 1
            else:
                new[k] = [row["id"]]
                to_insert.append(row)
        if to_insert:
            # Our rows are the ones past the highest id before the insert (with any a
            # concurrent writer committed meanwhile, which the identity match skips).
            after = self._max_id(_RESP)
            self._insert["responses"].run(to_insert)
            stmt = select(_RESP.c.id, _RESP.c.request_hash, _RESP.c.response_hash)
            ids: dict[tuple[str, str], int] = {}
            for i, q, r in self.conn.execute(stmt.where(_RESP.c.id > after).order_by(_RESP.c.id)):
                ids.setdefault((q, r), i)
            for k, sources in new.items():
                for source in sources:
                    self.response_ids[source] = ids[k]
                if self._remember["responses"]:
                    self._mine["responses"].setdefault(k[1], []).append((k[1], k[0], ids[k]))
        tally.added += len(to_insert)

    def _response_ids(self, hashes: set[str]) -> dict[tuple[str, str], int]:
        """(request_hash, response_hash) -> the target's lowest id with that identity."""
        ids: dict[tuple[str, str], int] = {}
        found = self._present(
            _RESP, _RESP.c.response_hash, hashes, _RESP.c.request_hash, _RESP.c.id
        )
        for matches in found.values():
            for r, q, i in matches:
                ids[(q, r)] = min(i, ids.get((q, r), i))
        return ids

    def cache_entries(self, rows: Sequence[dict[str, Any]]) -> None:
        """Rows' ``response_id`` is the source's; an entry already in the target wins."""
        tally = self.result.tallies["cache_entries"]
        if self.verbatim:
            kept = []
            for row in rows:
                if row["response_id"] in self._refused_ids:
                    self.result.refuse("cache_entries", "its response was refused or is missing")
                else:
                    kept.append(row)
            self._insert["cache_entries"].run(kept)
            tally.added += len(kept)
            return
        found = self._present(
            _ENTRY,
            _ENTRY.c.request_hash,
            [r["request_hash"] for r in rows],
            _ENTRY.c.namespace,
            _ENTRY.c.slot,
        )
        present = {(ns, h, slot) for matches in found.values() for h, ns, slot in matches}
        new: dict[tuple[str, str, int], dict[str, Any]] = {}
        for row in rows:
            k = (row["namespace"], row["request_hash"], row["slot"])
            target = self.response_ids.get(row["response_id"])
            if k in present or k in new:
                tally.already_present += 1
            elif target is None:
                self.result.refuse("cache_entries", "its response was refused or is missing")
            else:
                new[k] = {**row, "response_id": target}
        self._insert["cache_entries"].run(list(new.values()))
        if self._remember["cache_entries"]:
            for ns, h, slot in new:
                self._mine["cache_entries"].setdefault(h, []).append((h, ns, slot))
        tally.added += len(new)

    def calls(self, rows: Sequence[dict[str, Any]]) -> None:
        """Audit rows keep their call_uuid; ``call_tags`` (name -> value) go with them."""
        tally, tags = self.result.tallies["calls"], self.result.tallies["call_tags"]
        if self.verbatim:
            self._calls_verbatim(rows)
            return
        found = self._present(
            _LOG,
            _LOG.c.call_uuid,
            [r["call_uuid"] for r in rows],
            _LOG.c.request_hash,
        )
        present = {u: h for matches in found.values() for u, h in matches}
        new: dict[str, dict[str, Any]] = {}
        for row in rows:
            uuid, call_tags = row["call_uuid"], row.get("call_tags") or {}
            if uuid in present or uuid in new:
                if uuid in new or present[uuid] == row["request_hash"]:
                    tally.already_present += 1
                    tags.already_present += len(call_tags)
                else:
                    self.result.refuse(
                        "calls", "its call_uuid is already in the target for another call"
                    )
                continue
            source_rid = row["response_id"]
            target = None if source_rid is None else self.response_ids.get(source_rid)
            if source_rid is not None and target is None:
                self.result.refuse("calls", "its response was refused or is missing")
                continue
            new[uuid] = {**row, "response_id": target}
        if not new:
            return
        after = self._max_id(_LOG)
        self._insert["call_log"].run(list(new.values()))
        tally.added += len(new)
        if self._remember["call_log"]:
            mine = self._mine["call_log"]
            for u, row in new.items():
                mine[u] = [(u, row["request_hash"])]
        if any(row.get("call_tags") for row in new.values()):
            stmt = select(_LOG.c.call_uuid, _LOG.c.id).where(_LOG.c.id > after)
            ids = {u: i for u, i in self.conn.execute(stmt)}
            tag_rows = [
                {"call_id": ids[u], "name": k, "value": v}
                for u, row in new.items()
                for k, v in (row.get("call_tags") or {}).items()
            ]
            self._insert["call_tags"].run(tag_rows)
            tags.added += len(tag_rows)

    def _calls_verbatim(self, rows: Sequence[dict[str, Any]]) -> None:
        """Audit rows with their source ``id``, which their tags refer to."""
        kept, tag_rows = [], []
        for row in rows:
            if row["response_id"] is not None and row["response_id"] in self._refused_ids:
                self.result.refuse("calls", "its response was refused or is missing")
                continue
            kept.append(row)
            for k, v in (row.get("call_tags") or {}).items():
                tag_rows.append({"call_id": row["id"], "name": k, "value": v})
        self._insert["call_log"].run(kept)
        self._insert["call_tags"].run(tag_rows)
        self.result.tallies["calls"].added += len(kept)
        self.result.tallies["call_tags"].added += len(tag_rows)


def _names(table: Any) -> list[str]:
    return [c.name for c in table.c if c.name != "id"]


# --- prune --------------------------------------------------------------------


def _kept_call_refs(response_id: Any, before: datetime) -> Any:
    c = _LOG.alias("kept_calls")
    return exists().where(c.c.response_id == response_id, c.c.created_at >= before)


def _entry_goes(entry: Any, before: datetime, keep_cache: bool) -> ColumnElement[bool]:
    """Without --keep-cache: its answer is older than ``before`` and no remaining audit row refers to it."""
    if keep_cache:
        return false()
    r = _RESP.alias("entry_answer")
    return and_(
        exists().where(r.c.id == entry.c.response_id, r.c.created_at < before),
        ~_kept_call_refs(entry.c.response_id, before),
    )


def _response_goes(resp: Any, before: datetime, keep_cache: bool) -> ColumnElement[bool]:
    """Older than ``before`` and referenced by no remaining audit row or cache entry.

    Without --keep-cache every entry pointing at such a response goes too, so only
    --keep-cache has to look at the entries.
    """
    goes = and_(resp.c.created_at < before, ~_kept_call_refs(resp.c.id, before))
    if keep_cache:
        e = _ENTRY.alias("kept_entries")
        goes = and_(goes, ~exists().where(e.c.response_id == resp.c.id))
    return goes


def _referenced_requests(
    conn: Connection, hashes: list[str], before: datetime, keep_cache: bool
) -> set[str]:
    """Which of ``hashes`` a remaining audit row, response or cache entry refers to."""
    e, r = _ENTRY.alias("e"), _RESP.alias("r")
    queries = [
        select(_LOG.c.request_hash).where(
            _LOG.c.request_hash.in_(hashes), _LOG.c.created_at >= before
        ),
        select(r.c.request_hash).where(
            r.c.request_hash.in_(hashes), ~_response_goes(r, before, keep_cache)
        ),
        select(e.c.request_hash).where(
            e.c.request_hash.in_(hashes), ~_entry_goes(e, before, keep_cache)
        ),
    ]
    return {h for q in queries for h in conn.execute(q.distinct()).scalars()}


class _Pruner:
    """One prune (or dry run): the four sweeps, in batches, counting what goes."""

    def __init__(
        self,
        engine: Engine,
        before: datetime,
        keep_cache: bool,
        reader: Connection | None,
        batch_size: int,
    ) -> None:
        self.engine, self.before, self.keep_cache = engine, before, keep_cache
        self.reader, self.batch_size = reader, batch_size  # a reader means a dry run
        self.counts = dict.fromkeys(TABLES, 0)

    def run(self) -> dict[str, int]:
        b, keep = self.before, self.keep_cache
        self._sweep(_LOG, _LOG.c.id, _LOG.c.created_at < b, self._calls)
        self._sweep(_ENTRY, _ENTRY.c.id, _entry_goes(_ENTRY, b, keep), self._rows("cache_entries"))
        self._sweep(_RESP, _RESP.c.id, _response_goes(_RESP, b, keep), self._rows("responses"))
        self._sweep(_REQ, _REQ.c.request_hash, _REQ.c.created_at < b, self._requests)
        return self.counts

    def _sweep(
        self,
        table: Any,
        key: Any,
        goes: ColumnElement[bool],
        handle: Callable[[Connection, Any, Any, ColumnElement[bool], list[Any]], None],
    ) -> None:
        last = None
        while True:
            stmt = select(key).where(goes).order_by(key).limit(self.batch_size)
            if last is not None:
                stmt = stmt.where(key > last)
            with contextlib.ExitStack() as stack:
                conn = self.reader or stack.enter_context(self.engine.begin())
                ids = list(conn.execute(stmt).scalars())
                if ids:
                    handle(conn, table, key, goes, ids)
            if len(ids) < self.batch_size:
                return
            last = ids[-1]

    def _delete(
        self, conn: Connection, name: str, table: Any, where: ColumnElement[bool], n: int
    ) -> None:
        if self.reader is not None:
            self.counts[name] += n
        else:
            self.counts[name] += conn.execute(table.delete().where(where)).rowcount

    def _calls(self, conn: Connection, table: Any, key: Any, goes: Any, ids: list[Any]) -> None:
        in_batch = _TAGS.c.call_id.in_(ids)
        tags = conn.execute(select(func.count()).select_from(_TAGS).where(in_batch)).scalar_one()
        self._delete(conn, "call_tags", _TAGS, in_batch, int(tags))
        self._delete(conn, "call_log", table, key.in_(ids), len(ids))

    def _rows(self, name: str) -> Callable[[Connection, Any, Any, Any, list[Any]], None]:
        def handle(conn: Connection, table: Any, key: Any, goes: Any, ids: list[Any]) -> None:
            # The condition again: a concurrent call may have started to use a row since the select.
            self._delete(conn, name, table, and_(key.in_(ids), goes), len(ids))

        return handle

    def _requests(self, conn: Connection, table: Any, key: Any, goes: Any, ids: list[Any]) -> None:
        doomed = sorted(set(ids) - _referenced_requests(conn, ids, self.before, self.keep_cache))
        if doomed:
            self._delete(conn, "requests", table, key.in_(doomed), len(doomed))


def prune(
    ledger_or_location: Ledger | str,
    before: datetime,
    *,
    keep_cache: bool = False,
    dry_run: bool = False,
    batch_size: int = 1000,
) -> dict[str, Any]:
    """Delete what is older than ``before``; docs/transfer.md says exactly what goes.

    1. audit rows created before ``before``, and their tags;
    2. without ``keep_cache``: cache entries whose answer (response) was created before
       ``before`` and that no remaining audit row refers to;
    3. responses created before ``before`` that no remaining audit row or entry refers to;
    4. requests created before ``before`` that nothing remaining refers to.

    One transaction per batch (a rerun finishes an interrupted prune). A dry run reads
    one snapshot and changes nothing; its counts are what the real run deletes.
    """
    with opened(ledger_or_location) as ledger, contextlib.ExitStack() as stack:
        reader = stack.enter_context(snapshot(ledger.engine)) if dry_run else None
        counts = _Pruner(ledger.engine, before, keep_cache, reader, batch_size).run()
        if not dry_run:
            log.info(
                "ledger.pruned", db=db.describe(ledger.url), before=before.isoformat(), **counts
            )
    return {
        "before": before.isoformat(sep=" "),
        "dry_run": dry_run,
        "keep_cache": keep_cache,
        "deleted": counts,
    }


# --- vacuum -------------------------------------------------------------------


def _size(conn: Connection, ledger: Ledger) -> int | None:
    name = ledger.dialect
    if name == "sqlite":
        path = db.sqlite_path(ledger.url)
        if path is None:
            return None
        return sum(
            p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists()
        )
    tables = ", ".join(f"'{t}'" for t in TABLES)
    if name == "postgresql":
        sql = f"SELECT SUM(pg_total_relation_size(c.oid)) FROM pg_class c WHERE c.relname IN ({tables}) AND pg_table_is_visible(c.oid)"
    elif name in ("mysql", "mariadb"):
        sql = f"SELECT SUM(data_length + index_length) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name IN ({tables})"
    else:
        return None
    value = conn.execute(text(sql)).scalar()
    return None if value is None else int(value)


def vacuum(ledger_or_location: Ledger | str) -> dict[str, Any]:
    """Give free space back: SQLite VACUUM, PostgreSQL VACUUM ANALYZE, MariaDB OPTIMIZE TABLE."""
    with opened(ledger_or_location) as ledger:
        with ledger.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            before = _size(conn, ledger)
            if ledger.dialect == "sqlite":
                conn.exec_driver_sql("VACUUM")
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            elif ledger.dialect == "postgresql":
                conn.exec_driver_sql(f"VACUUM ANALYZE {', '.join(TABLES)}")
            elif ledger.dialect in ("mysql", "mariadb"):
                conn.exec_driver_sql(f"OPTIMIZE TABLE {', '.join(TABLES)}").all()
            after = _size(conn, ledger)
        log.info(
            "ledger.vacuumed", db=db.describe(ledger.url), bytes_before=before, bytes_after=after
        )
        return {
            "database": db.describe(ledger.url),
            "engine": ledger.dialect,
            "bytes_before": before,
            "bytes_after": after,
        }
