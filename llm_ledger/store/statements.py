"""The raw-DBAPI layer: statements compiled once per dialect, values converted by column type.

SQLAlchemy builds and compiles every statement here; executing the compiled SQL on the
driver's cursor skips its per-call execution machinery, which costs more than SQLite
itself on the hot path and several times the database's work in a bulk copy. The
conversions SQLAlchemy's column types would make are done here instead, chosen once per
column from the models' types (:func:`writer`, :func:`reader`), for the kinds that need
them: JSON, SQLite's DateTime and Money, Booleans read back as integers.

The audit row is mapped here, once: :data:`CALL_LOG_SOURCES` says where each ``call_log``
column's value comes from on a :class:`~llm_ledger.records.CallRecord` (a field of the
same name unless listed). A column without a source fails when this module is imported,
never after an API call was paid for. The repository (one call), the merge (import, copy)
and the pickle import all write audit rows from it.
"""

from __future__ import annotations

import dataclasses
import json
import operator
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Dialect, Insert, insert
from sqlalchemy.dialects import mysql, postgresql, sqlite

from ..keys import canonical_json
from ..records import CallRecord, Stored, Usage
from .models import CallLog, Money, read_money

Converter = Callable[[Any], Any]

_LOG: Any = CallLog.__table__


# --- values ---------------------------------------------------------------------


class Dumped:
    """A JSON column's value already serialised (canonical JSON), passed through as is."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _json_text(v: Any) -> Any:
    """A JSON column's text: a ``str`` is JSON text already (as bulk reads give it)."""
    if v is None or v.__class__ is str:
        return v
    return v.text if v.__class__ is Dumped else canonical_json(v)


def _sqlite_datetime(v: Any) -> Any:
    # SQLAlchemy's SQLite storage format, so its reads parse it back.
    return v.isoformat(sep=" ", timespec="microseconds") if isinstance(v, datetime) else v


def _float_or_none(v: Any) -> Any:
    return None if v is None else float(v)


def _is_json(kind: Any) -> bool:
    return isinstance(kind, JSON) or isinstance(getattr(kind, "impl", None), JSON)


def writer(column: Any, dialect: Dialect) -> Converter | None:
    """Python value -> what the driver takes for ``column`` (None: as it is)."""
    kind, lite = column.type, dialect.name == "sqlite"
    if _is_json(kind):
        return _json_text
    if lite and isinstance(kind, DateTime):
        return _sqlite_datetime
    if lite and isinstance(kind, Money):
        return _float_or_none
    return None


def _read_datetime(v: Any) -> Any:
    return datetime.fromisoformat(v) if isinstance(v, str) else v


def _read_bool(v: Any) -> Any:
    return v if v is None or isinstance(v, bool) else bool(v)


def reader(column: Any) -> Converter | None:
    """Driver value -> the Python value SQLAlchemy would give. JSON stays as the driver
    gives it (text on SQLite/MariaDB, already parsed on PostgreSQL): writers take both."""
    kind = column.type
    if isinstance(kind, Money):
        return read_money
    if isinstance(kind, DateTime):
        return _read_datetime
    if isinstance(kind, Boolean):
        return _read_bool
    return None


# --- compiled statements --------------------------------------------------------


def insert_ignore(dialect: Dialect, table: Any, keys: list[str]) -> Insert:
    """INSERT that skips rows whose ``keys`` exist already."""
    if dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=keys)
    if dialect.name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=keys)
    # MySQL/MariaDB: IGNORE only ever meets the unique key here (the referenced rows
    # are written earlier in the same transaction).
    return insert(table).prefix_with("IGNORE")


def upsert(dialect: Dialect, table: Any, keys: list[str], update: list[str]) -> Insert:
    """INSERT that overwrites ``update`` of the row whose ``keys`` exist already."""
    if dialect.name in ("mysql", "mariadb"):
        ins = mysql.insert(table)
        return ins.on_duplicate_key_update({c: ins.inserted[c] for c in update})
    ins = (postgresql if dialect.name == "postgresql" else sqlite).insert(table)
    return ins.on_conflict_do_update(index_elements=keys, set_={c: ins.excluded[c] for c in update})


class Compiled:
    """One statement compiled for one dialect: its SQL and how a row becomes its parameters.

    Positional drivers (sqlite3) get a tuple picked in C in the SQL's order, then the few
    values that need it converted; named ones (psycopg, PyMySQL) a dict.
    """

    __slots__ = ("sql", "names", "positional", "_pick", "_fix", "_convs")

    def __init__(
        self, stmt: Any, dialect: Dialect, keys: Sequence[str] | None = None, table: Any = None
    ) -> None:
        table = getattr(stmt, "table", None) if table is None else table
        c = stmt.compile(dialect=dialect, column_keys=list(keys) if keys is not None else None)
        self.sql = str(c)
        self.positional = bool(dialect.positional)
        self.names: list[str] = list(c.positiontup or []) if self.positional else list(keys or [])
        convs = [writer(table.c[k], dialect) if table is not None else None for k in self.names]
        self._pick: Callable[[Any], Any] = operator.itemgetter(*self.names or [""])
        if len(self.names) == 1:  # a tuple, as itemgetter gives for several names
            (name,) = self.names
            self._pick = lambda row: (row[name],)
        self._fix = tuple((i, f) for i, f in enumerate(convs) if f is not None)
        self._convs = {k: f for k, f in zip(self.names, convs, strict=True) if f is not None}

    def params(self, row: Mapping[str, Any]) -> Any:
        if self.positional:
            if not self._fix:
                return self._pick(row)
            values = list(self._pick(row))
            for i, f in self._fix:
                values[i] = f(values[i])
            return values
        convs = self._convs
        if not self.names:  # a statement without column keys (a select): its own names
            return {k: (v if k not in convs else convs[k](v)) for k, v in row.items()}
        return {k: (row[k] if k not in convs else convs[k](row[k])) for k in self.names}

    def run(self, cur: Any, row: Mapping[str, Any]) -> Any:
        cur.execute(self.sql, self.params(row))
        return cur

    def run_many(self, cur: Any, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            cur.executemany(self.sql, [self.params(r) for r in rows])


def insert_rows(conn: Any, compiled: Compiled, rows: Sequence[Mapping[str, Any]]) -> None:
    """executemany on the DBAPI connection of a SQLAlchemy ``conn`` (inside its transaction)."""
    if not rows:
        return
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        compiled.run_many(cursor, rows)
    finally:
        cursor.close()


def fetch(conn: Any, stmt: Any) -> list[dict[str, Any]]:
    """Rows of a select of table columns, as dicts of Python values (JSON possibly as text)."""
    result = conn.execute(stmt)
    try:
        names = list(result.keys())
        raw = result.cursor.fetchall() if result.cursor is not None else []
    finally:
        result.close()
    convs = [(n, f) for n, c in zip(names, stmt.selected_columns, strict=True) if (f := reader(c))]
    rows = []
    for values in raw:
        row = dict(zip(names, values, strict=True))
        for n, f in convs:
            row[n] = f(row[n])
        rows.append(row)
    return rows


# --- the audit row -----------------------------------------------------------------

CALL_LOG_SOURCES: dict[str, str] = {
    "prompt_tokens": "usage.prompt_tokens",
    "completion_tokens": "usage.completion_tokens",
    "cached_tokens": "usage.cached_tokens",
    "reasoning_tokens": "usage.reasoning_tokens",
    "total_tokens": "usage.total_tokens",
    "tokens_estimated": "usage.estimated",
}
"""``call_log`` columns whose value is not the :class:`CallRecord` field of the same name
(a dotted path on the record). ``id`` is the database's; ``response_id`` is decided by the
write (the answer given, or the one that won a race)."""
_SET_BY_THE_WRITE = ("id", "response_id")


def _source(name: str) -> str:
    path = CALL_LOG_SOURCES.get(name, name)
    head, _, rest = path.partition(".")
    fields = {f.name: f for f in dataclasses.fields(CallRecord)}
    ok = head in fields and (not rest or rest in {f.name for f in dataclasses.fields(Usage)})
    if not ok:
        raise ImportError(
            f"call_log.{name} has no source on CallRecord: add a field {name!r} to "
            "llm_ledger.records.CallRecord (or map it in statements.CALL_LOG_SOURCES)"
        )
    return path


_CALL_PATHS = {c.name: _source(c.name) for c in _LOG.columns if c.name not in _SET_BY_THE_WRITE}
_CALL_COLUMNS = [c.name for c in _LOG.columns if c.name != "id"]


def _tags(v: Any) -> Any:
    return v or None  # no tags: NULL, not {}


_CALL_FIX = {"tags": _tags}


def call_log_row(rec: CallRecord, response_id: int | None) -> dict[str, Any]:
    """The ``call_log`` row of a record (every column but ``id``), as Python values."""
    values = operator.attrgetter(*_CALL_PATHS.values())(rec)
    found = dict(zip(_CALL_PATHS, values, strict=True))
    for name, fix in _CALL_FIX.items():
        found[name] = fix(found[name])
    found["response_id"] = response_id
    return {name: found[name] for name in _CALL_COLUMNS}


class CallInsert(Compiled):
    """INSERT INTO call_log compiled once; its parameters are read straight off a record."""

    __slots__ = ("_get", "_response_at", "_tags_at")

    def __init__(self, dialect: Dialect, *, returning: bool) -> None:
        stmt = insert(_LOG)
        if returning:
            stmt = stmt.returning(_LOG.c.id)
        super().__init__(stmt, dialect, [n for n in (*_CALL_PATHS, "response_id")], _LOG)
        # The response_id slot is filled after the getter runs: read a placeholder there.
        paths = [_CALL_PATHS.get(n, "served_response_id") for n in self.names]
        self._get = operator.attrgetter(*paths)
        self._response_at = self.names.index("response_id")
        self._tags_at = self.names.index("tags")
        self._fix = tuple((i, f) for i, f in self._fix if i != self._tags_at)

    def record_params(self, rec: CallRecord, response_id: int | None) -> Any:
        values = list(self._get(rec))
        values[self._response_at] = response_id
        tags = values[self._tags_at]
        values[self._tags_at] = _json_text(tags) if tags else None
        for i, f in self._fix:
            values[i] = f(values[i])
        return values if self.positional else dict(zip(self.names, values, strict=True))


def usage_columns(u: Usage) -> dict[str, Any]:
    """The token columns ``responses`` and ``call_log`` share."""
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "cached_tokens": u.cached_tokens,
        "reasoning_tokens": u.reasoning_tokens,
        "total_tokens": u.total_tokens,
        "tokens_estimated": u.estimated,
    }


# --- stored answers ------------------------------------------------------------------


def stored(row: Any) -> Stored:
    """A lookup row (``repository.STORED_COLUMNS`` order) read on a raw DBAPI cursor."""
    response = row[1] if isinstance(row[1], dict) else json.loads(row[1])
    stored_at = row[2] if isinstance(row[2], datetime) else datetime.fromisoformat(row[2])
    return Stored(
        row[0], response, stored_at, row[3], row[4], row[5], row[6], row[7], read_money(row[8])
    )


__all__ = [
    "CALL_LOG_SOURCES",
    "CallInsert",
    "Compiled",
    "Dumped",
    "call_log_row",
    "fetch",
    "insert_ignore",
    "insert_rows",
    "reader",
    "stored",
    "upsert",
    "usage_columns",
    "writer",
]
