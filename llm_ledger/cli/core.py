"""Commands: info, migrate, calls, show, recover, demo (see llm_ledger/cli/__init__.py).

Every command here but ``migrate``, ``recover`` and ``demo`` only reads, through the
read-only connection of :mod:`llm_ledger.cli.sql` (:func:`read_only`).
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timedelta, timezone
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy import (
    Text,
    bindparam,
    cast,
    func,
    inspect,
    or_,
    select,
    text,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from .. import config, db, keys, spool
from ..errors import LedgerError
from ..models import VIEW_NAMES, Base, CallLog, Request, Response
from ..repository import Ledger
from . import app
from .output import (
    FORMAT_OPTION,
    Format,
    Since,
    Until,
    emit,
    emit_fields,
    emit_json_block,
    emit_object,
    fail,
    wide,
)
from .sql import db_message as _db_message
from .sql import location_name as _where
from .sql import read_only

_LOG = CallLog.__table__
_REQ = Request.__table__
_RESP = Response.__table__
TABLE_ORDER = ("requests", "responses", "cache_entries", "call_log", "call_tags")
PROMPT_CHARS = 60


# --- commands -------------------------------------------------------------------


@app.command()
def info(ctx: typer.Context, fmt: Format = FORMAT_OPTION) -> None:
    """Which database, its schema revision, row counts and size on disk.

    \b
    Example: llm-ledger --db postgresql://app@db.internal/ledger info
    """
    location = ctx.obj.db
    with read_only(location, need_ledger=False) as conn:
        where = _where(location)
        rev, head = db.current_revision(conn), db.head_revision()
        present = set(inspect(conn).get_table_names())
        tables = [t for t in TABLE_ORDER if t in present]
        views = [v for v in VIEW_NAMES if v in set(inspect(conn).get_view_names())]
        rows = {
            t: int(
                conn.execute(select(func.count()).select_from(Base.metadata.tables[t])).scalar_one()
            )
            for t in tables
        }
        size, detail = _size(conn, location, tables)
        engine = "mariadb" if getattr(conn.dialect, "is_mariadb", False) else conn.dialect.name
    state = _revision_state(rev, head)
    if fmt is Format.json:
        emit_object(
            {
                "database": where,
                "engine": engine,
                "revision": rev,
                "head": head,
                "current": rev == head,
                "rows": rows,
                "views": views,
                "size_bytes": size,
                **detail,
            }
        )
        return
    fields = [
        ("database", where),
        ("engine", engine),
        ("revision", state),
        ("size", _size_text(size, detail)),
        ("views", ", ".join(views) or None),
    ]
    if fmt is Format.csv:
        emit(
            [{"field": k, "value": v} for k, v in fields]
            + [{"field": f"rows.{t}", "value": n} for t, n in rows.items()],
            ["field", "value"],
            fmt,
        )
        return
    emit_fields("ledger", fields)
    emit_fields("rows", [(t, f"{n:,}") for t, n in rows.items()])


def _revision_state(rev: str | None, head: str) -> str:
    if rev is None:
        return "none: no ledger schema here yet (`llm-ledger migrate` creates it)"
    if rev == head:
        return f"{rev} (current)"
    if rev in db.known_revisions():
        return f"{rev} (older than {head}: run `llm-ledger migrate`)"
    return f"{rev} (unknown: newer than this llm_ledger's {head}; upgrade llm-ledger)"


def _size(conn: Connection, location: str, tables: list[str]) -> tuple[int, dict[str, int]]:
    """The ledger's bytes on disk, and the parts they were added from."""
    name = conn.dialect.name
    if name == "sqlite":
        path = db.sqlite_path(db.normalize_url(location))
        if path is None:
            return 0, {}
        wal = path.with_name(path.name + "-wal")
        detail = {
            "file_bytes": path.stat().st_size,
            "wal_bytes": wal.stat().st_size if wal.exists() else 0,
        }
        return detail["file_bytes"] + detail["wal_bytes"], detail
    names = [*tables, "alembic_version"]
    if name == "postgresql":
        total = conn.execute(
            text(
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "WHERE c.relkind = 'r' AND c.relname IN :names "
                "AND c.relnamespace = to_regnamespace(current_schema())"
            ).bindparams(bindparam("names", expanding=True)),
            {"names": names},
        ).scalar_one()
        database = conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one()
        return int(total), {"database_bytes": int(database)}
    if name in ("mysql", "mariadb"):
        total = conn.execute(
            text(
                "SELECT COALESCE(SUM(data_length + index_length), 0) FROM information_schema.tables "
                "WHERE table_schema = DATABASE() AND table_name IN :names"
            ).bindparams(bindparam("names", expanding=True)),
            {"names": names},
        ).scalar_one()
        return int(total), {}
    return 0, {}


def _size_text(size: int, detail: dict[str, int]) -> str:
    def human(n: int) -> str:
        value = float(n)
        for unit in ("bytes", "KiB", "MiB", "GiB"):
            if value < 1024 or unit == "GiB":
                return f"{n:,} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
            value /= 1024
        return f"{n:,} bytes"  # pragma: no cover

    if "file_bytes" in detail:
        return (
            f"{human(size)} ({size:,} bytes: file {detail['file_bytes']:,} "
            f"+ WAL {detail['wal_bytes']:,})"
        )
    if "database_bytes" in detail:
        return (
            f"{human(size)} ({size:,} bytes in the ledger's tables; "
            f"whole database {human(detail['database_bytes'])})"
        )
    return f"{human(size)} ({size:,} bytes in the ledger's tables)"


@app.command()
def migrate(ctx: typer.Context) -> None:
    """Create the ledger's schema, or upgrade it to this version's head revision.

    Needed for PostgreSQL and MariaDB ledgers after an upgrade of llm-ledger (SQLite
    ledgers are upgraded when opened). Safe to run again: it then changes nothing.

    \b
    Example: llm-ledger --db postgresql://app@db.internal/ledger migrate
    """
    location = ctx.obj.db
    where = _where(location)
    try:
        engine = db.make_engine(location, poolclass=NullPool)
    except LedgerError as exc:
        fail(str(exc))
    try:
        with engine.connect() as conn:
            rev = db.current_revision(conn)
        head = db.head_revision()
        if rev == head:
            typer.echo(f"already at {head} ({where})")
            return
        before, after = db.upgrade(engine)
        typer.echo(f"migrated {where} from {before or 'empty'} to {after}")
    except LedgerError as exc:
        fail(str(exc))
    except DBAPIError as exc:
        fail(f"cannot migrate {where}: {_db_message(exc)}")
    finally:
        engine.dispose()


class Status(str, Enum):
    ok = "ok"
    error = "error"
    refused = "refused"


class Cache(str, Enum):
    hit = "hit"
    miss = "miss"
    bypass = "bypass"


CALL_COLUMNS = (
    "id",
    "created_at",
    "kind",
    "model",
    "cache_status",
    "status",
    "attempts",
    "latency_ms",
    "total_tokens",
    "cost_usd",
    "prompt",
)


MAX_ID = 2**63 - 1  # the largest BIGINT: ids and LIMITs beyond it fit no engine


@app.command()
def calls(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option(help="Only calls to this model.")] = None,
    since: Since = None,
    until: Until = None,
    run: Annotated[str | None, typer.Option(help="Only calls made in scope(run=RUN).")] = None,
    status: Annotated[Status | None, typer.Option(help="ok, error or refused.")] = None,
    cache: Annotated[Cache | None, typer.Option(help="hit, miss or bypass.")] = None,
    search: Annotated[
        str | None,
        typer.Option(help="Text in the request or the answer JSON (case-insensitive)."),
    ] = None,
    limit: Annotated[int, typer.Option(min=0, help="At most this many calls; 0: all.")] = 20,
    fmt: Format = FORMAT_OPTION,
) -> None:
    """The call log, newest first: one line per call with its prompt (first 60 characters).

    \b
    Example: llm-ledger calls --model gpt-4o-mini --since 2026-05-01 --cache miss --limit 50
    """
    lo, hi = _time_bound(since, "--since"), _time_bound(until, "--until", end=True)
    stmt = (
        select(*(_LOG.c[c] for c in CALL_COLUMNS[:-1]), _REQ.c.request)
        .join_from(_LOG, _REQ, _REQ.c.request_hash == _LOG.c.request_hash)
        .order_by(_LOG.c.created_at.desc(), _LOG.c.id.desc())
    )
    for column, value in (
        (_LOG.c.model, model),
        (_LOG.c.run, run),
        (_LOG.c.status, status.value if status else None),
        (_LOG.c.cache_status, cache.value if cache else None),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    if lo is not None:
        stmt = stmt.where(_LOG.c.created_at >= lo)
    if hi is not None:
        stmt = stmt.where(_LOG.c.created_at < hi)
    if search:
        needle = search.lower()
        stmt = stmt.outerjoin(_RESP, _RESP.c.id == _LOG.c.response_id).where(
            or_(
                func.lower(cast(_REQ.c.request, Text)).contains(needle, autoescape=True),
                func.lower(cast(_RESP.c.response, Text)).contains(needle, autoescape=True),
            )
        )
    if limit > MAX_ID:
        fail(f"--limit {limit}: at most {MAX_ID} (or 0: every call)")
    if limit:
        stmt = stmt.limit(limit)
    with read_only(ctx.obj.db) as conn:
        rows = [dict(row._mapping) for row in conn.execute(stmt)]
    for row in rows:
        row["prompt"] = prompt_of(row.pop("request"))
    emit(rows, CALL_COLUMNS, fmt, width=wide(), empty="no calls match these filters")


def _time_bound(value: str | None, option: str, *, end: bool = False) -> datetime | None:
    """A UTC bound: a date alone is its midnight (``end``: the next midnight)."""
    if value is None:
        return None
    text_value = value.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text_value):
            day = date.fromisoformat(text_value) + timedelta(days=1 if end else 0)
            return datetime(day.year, day.month, day.day)
        if text_value.endswith(("Z", "z")):
            text_value = text_value[:-1] + "+00:00"
        moment = datetime.fromisoformat(text_value)
    except ValueError:
        fail(
            f"{option} {value!r}: expected a date (2026-05-01) or a UTC datetime "
            "(2026-05-01T12:30:00, or with an offset such as +02:00)"
        )
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment


def prompt_of(request: Any) -> str:
    """The last message of a chat request (the input of an embedding), on one line, cut short."""
    if isinstance(request, str):
        try:
            request = json.loads(request)
        except ValueError:
            return " ".join(request.split())[:PROMPT_CHARS]
    if not isinstance(request, dict):
        return ""
    messages = request.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        found = keys.message_text(messages[-1])
    elif isinstance(request.get("input"), str):
        found = request["input"]
    elif isinstance(request.get("input"), list):
        found = " ".join(str(item) for item in request["input"])
    else:
        found = ""
    return " ".join(found.split())[:PROMPT_CHARS]


@app.command()
def show(
    ctx: typer.Context,
    call: Annotated[str, typer.Argument(help="The call's id (from `calls`) or its call_uuid.")],
    fmt: Format = FORMAT_OPTION,
) -> None:
    """One call in full: its audit row, request, response, usage, cost, attempts and error.

    \b
    Example: llm-ledger show 42 --format json
    """
    if call.isdigit() and int(call) > MAX_ID:  # no id is that large (and no engine takes it)
        fail(f"no call {call} in {_where(ctx.obj.db)}; `llm-ledger calls` lists them")
    where = _LOG.c.id == int(call) if call.isdigit() else _LOG.c.call_uuid == call
    with read_only(ctx.obj.db) as conn:
        row = conn.execute(select(_LOG).where(where)).mappings().first()
        if row is None:
            fail(f"no call {call} in {_where(ctx.obj.db)}; `llm-ledger calls` lists them")
        request = conn.execute(
            select(_REQ.c.request).where(_REQ.c.request_hash == row["request_hash"])
        ).scalar()
        response = None
        if row["response_id"] is not None:
            response = conn.execute(
                select(_RESP.c.response).where(_RESP.c.id == row["response_id"])
            ).scalar()
    doc = call_document(dict(row), request, response)
    if fmt is Format.json:
        emit_object(doc)
        return
    if fmt is Format.csv:
        flat = {**row, "request": request, "response": response}
        emit([flat], list(flat), fmt)
        return
    emit_fields(f"call {row['id']}", doc["call"].items())
    for section in ("usage", "cost"):
        emit_fields(section, doc[section].items())
    emit_fields("error", (doc["error"] or {}).items())
    emit_json_block("request", request)
    emit_json_block("response", response)


_USAGE = (
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "total_tokens",
    "tokens_estimated",
)
_COST = ("cost_usd", "saved_usd", "cost_note", "price_version")
_ERROR = ("error_type", "error_message")


def call_document(row: dict[str, Any], request: Any, response: Any) -> dict[str, Any]:
    """What `show` prints: the audit row grouped (call, usage, cost, error), request, response."""
    grouped = set(_USAGE) | set(_COST) | set(_ERROR)
    failed = row["error_type"] is not None or row["error_message"] is not None
    return {
        "call": {k: v for k, v in row.items() if k not in grouped},
        "usage": {k: row[k] for k in _USAGE},
        "cost": {k: row[k] for k in _COST},
        "error": {k: row[k] for k in _ERROR} if failed else None,
        "request": request,
        "response": response,
    }


@app.command()
def recover(ctx: typer.Context) -> None:
    """Write the calls spooled while the database was unreachable into the ledger (once each).

    It also finishes what a killed recovery left (``<spool>.recovering-*``), and lists the
    dead letters: spooled calls the database refused for good, kept with the reason in
    ``<spool>.dead.jsonl`` (see docs/reliability.md).

    \b
    Example: llm-ledger --db postgresql://app@db.internal/ledger recover
    """
    location = ctx.obj.db
    where = _where(location)
    spool_dir = config.settings().spool_dir
    path = spool.default_spool_path(db.normalize_url(location), spool_dir)
    if not spool.leftovers(path):
        typer.echo(f"nothing to recover: no spool file at {path}")
        _list_dead_letters(path)
        return
    try:
        ledger = Ledger(location, spool_dir=spool_dir)
    except LedgerError as exc:
        fail(str(exc))
    try:
        counts = ledger.recovered_at_open or ledger.recover()
    finally:
        ledger.close()
    dead = counts.get("dead_lettered", 0)
    typer.echo(
        f"recovered {path} into {where}: {counts['written']} written, "
        f"{counts['already_present']} already present, {counts['unreadable']} unreadable, "
        f"{counts['pending']} pending" + (f", {dead} dead-lettered" if dead else "")
    )
    if counts["unreadable"]:
        typer.echo(f"unreadable lines kept in {path.name}.unreadable")
    _list_dead_letters(path)
    if counts["pending"]:
        fail(
            f"{counts['pending']} spooled calls are still in {path}: the database refused "
            "them for now; run `llm-ledger recover` again once it accepts writes"
        )


def _list_dead_letters(path: Path) -> None:
    letters = spool.dead_letters(path)
    if letters:
        typer.echo(
            f"{len(letters)} dead letters (calls the database refuses for good) in "
            f"{spool.dead_letter_path(path)}:"
        )
        for letter in letters:
            typer.echo(f"  {letter.summary()}")


@app.command()
def demo(ctx: typer.Context) -> None:
    """Make a few calls twice and show the second pass answered from the ledger.

    Without OPENAI_API_KEY it starts llm_ledger's local test server and uses that.

    \b
    Example: llm-ledger --db /tmp/demo.db demo
    """
    from ..demo import run_demo

    code = run_demo(ctx.obj.db, echo=typer.echo)
    if code:
        raise typer.Exit(code)
