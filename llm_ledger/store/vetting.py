"""What a ledger's rows may hold, checked on a copy's source before anything is written.

SQLite stores whatever it is given ('abc' in a Money column, 'not a date' in a timestamp,
a view in place of a table), and a verbatim SQLite-to-SQLite copy moves values as stored
(INSERT ... SELECT), so a hostile source would reach the target as is and break every
reader after it. :func:`check_sqlite_source` asks SQLite itself, one scan per table, for the
first row holding a value the ledger's column could not have written; the rules come from
the models (the same facts the bundle reader checks in Python, transfer.py).
PostgreSQL and MariaDB type their columns, so a source there gets :func:`check_ids` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, Integer, String, func, select
from sqlalchemy.engine import Connection

from ..errors import TransferError
from .models import CHOICES, MAX_ID, TABLES, Base, Money

_REFERENCES = frozenset({"id", "response_id", "call_id"})
_DATETIME_GLOB = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9]*"


@dataclass(frozen=True)
class Rule:
    """A column's check as an SQLite expression (true when the value is one the ledger
    writes) and what it says a value must be."""

    column: str
    sql: str
    must_be: str


def _rule(table: str, column: Any) -> Rule:
    c, t, name = f'"{column.name}"', column.type, column.name
    if name in _REFERENCES:
        conds, must = (
            [f"typeof({c}) = 'integer'", f"{c} BETWEEN 1 AND {MAX_ID}"],
            (f"an id from 1 to {MAX_ID}"),
        )
    elif isinstance(t, Money):
        conds = [f"typeof({c}) IN ('integer', 'real')", f"abs({c}) < 10000000000"]
        must = "a number of dollars below 10000000000"
    elif isinstance(t, JSON):
        # json_valid parses once; an object's canonical JSON starts with its brace
        conds = [f"json_valid({c})", f"substr({c}, 1, 1) = '{{'"]
        must = "a JSON object"
    elif isinstance(t, Boolean):
        conds, must = [f"typeof({c}) = 'integer'", f"{c} IN (0, 1)"], "0 or 1"
    elif isinstance(t, DateTime):
        conds = [
            f"typeof({c}) = 'text'",
            f"{c} GLOB '{_DATETIME_GLOB}'",
            f"datetime({c}) IS NOT NULL",
        ]
        must = "a date-time (YYYY-MM-DD HH:MM:SS.ffffff)"
    elif isinstance(t, Float):
        conds = [f"typeof({c}) IN ('integer', 'real')", f"abs({c}) <= 1.7976931348623157e308"]
        must = "a finite number"
    elif isinstance(t, Integer):  # every other integer column is a count
        high = 2**63 - 1 if isinstance(t, BigInteger) else 2**31 - 1
        conds, must = (
            [f"typeof({c}) = 'integer'", f"{c} BETWEEN 0 AND {high}"],
            (f"a count from 0 to {high}"),
        )
    elif isinstance(t, String):
        # instr on a BLOB compares bytes: on text it would stop at the first NUL
        conds, must = (
            [f"typeof({c}) = 'text'", f"instr(CAST({c} AS BLOB), x'00') = 0"],
            ("text without NUL characters"),
        )
        if t.length is not None:
            conds.append(f"length({c}) <= {t.length}")
            must = f"text of at most {t.length} characters without NUL characters"
    else:
        raise AssertionError(f"no check for {table}.{name}")
    choices = CHOICES.get((table, name))
    if choices is not None:
        conds.append(f"{c} IN ({', '.join(repr(v) for v in choices)})")
        must = "one of " + ", ".join(choices)
    sql = " AND ".join(conds)
    if column.nullable:
        sql, must = f"{c} IS NULL OR ({sql})", f"null or {must}"
    return Rule(name, f"coalesce({sql}, 0)", must)


RULES: dict[str, list[Rule]] = {
    name: [_rule(name, c) for c in Base.metadata.tables[name].c] for name in TABLES
}
_KEYS = {"requests": "request_hash", "call_tags": "call_id"}


def check_sqlite_source(conn: Connection, schema: str, where: str) -> None:
    """Raise TransferError naming the first value in the SQLite ledger ``schema`` (``main``,
    or the name it is attached under) that the ledger could not have written, or a ledger
    table that is not a table (a view would be read in its place). ``where`` names the
    source in the message."""
    kinds: dict[str, str] = dict(
        conn.exec_driver_sql(
            f"SELECT name, type FROM {schema}.sqlite_master WHERE name IN "
            f"({', '.join('?' * len(TABLES))})",
            tuple(TABLES),
        ).all()
    )
    for table in TABLES:
        if kinds.get(table) != "table":
            raise TransferError(
                f"{where} is not a ledger this llm-ledger can copy: its {table!r} is "
                f"{'a ' + kinds[table] if table in kinds else 'missing'}, not a table; "
                "nothing was copied"
            )
    for table, rules in RULES.items():
        key = _KEYS.get(table, "id")
        checks = ", ".join(r.sql for r in rules)
        row = conn.exec_driver_sql(
            f"SELECT {key}, {checks} FROM {schema}.{table} "
            f"WHERE NOT ({' AND '.join(r.sql for r in rules)}) LIMIT 1"
        ).first()
        if row is None:
            continue
        bad = next(r for r, ok in zip(rules, row[1:], strict=True) if not ok)
        value = conn.exec_driver_sql(
            f'SELECT "{bad.column}" FROM {schema}.{table} WHERE {key} = ?', (row[0],)
        ).scalar()
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        raise TransferError(
            f"{where} is not a ledger this llm-ledger can copy: {table} row {key} "
            f"{row[0]!r} has {bad.column} {shown}, which must be {bad.must_be}; nothing was copied"
        )


def check_ids(conn: Connection, where: str) -> None:
    """Raise TransferError if a surrogate id of the ledger on ``conn`` is outside 1..MAX_ID:
    a verbatim copy keeps ids, and a target's id sequence moved to the top of its range
    would refuse every later call's row."""
    for name in ("responses", "cache_entries", "call_log"):
        column = Base.metadata.tables[name].c.id
        low, high = conn.execute(select(func.min(column), func.max(column))).one()
        if low is not None and (low < 1 or high > MAX_ID):
            raise TransferError(
                f"{where} is not a ledger this llm-ledger can copy: {name} holds id "
                f"{low if low < 1 else high}, outside 1..{MAX_ID}; nothing was copied"
            )
