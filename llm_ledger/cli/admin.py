"""Commands: info, migrate, recover, demo (see llm_ledger/cli/__init__.py).

``info`` only reads, through the read-only connection of ``llm-ledger sql``
(:func:`llm_ledger.cli.sql.read_only`); ``migrate`` and ``recover`` write.
"""

from __future__ import annotations

from pathlib import Path

import typer
from sqlalchemy import func, inspect, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from .. import config
from ..store import db, spool
from ..store.maintenance import ledger_size
from ..store.models import TABLES, VIEW_NAMES, Base
from ..store.repository import Ledger
from . import app
from .output import (
    FORMAT_OPTION,
    Format,
    db_message,
    emit,
    emit_fields,
    emit_object,
    fail,
    failing,
    where,
)
from .sql import read_only


@app.command()
def info(ctx: typer.Context, fmt: Format = FORMAT_OPTION) -> None:
    """Which database, its schema revision, row counts and size on disk.

    \b
    Example: llm-ledger --db postgresql://app@db.internal/ledger info
    """
    location = ctx.obj.db
    with read_only(location, need_ledger=False) as conn:
        rev, head = db.current_revision(conn), db.head_revision()
        present = set(inspect(conn).get_table_names())
        tables = [t for t in TABLES if t in present]
        views = [v for v in VIEW_NAMES if v in set(inspect(conn).get_view_names())]
        rows = {
            t: int(
                conn.execute(select(func.count()).select_from(Base.metadata.tables[t])).scalar_one()
            )
            for t in tables
        }
        size, detail = ledger_size(conn, db.normalize_url(location))
        engine = "mariadb" if getattr(conn.dialect, "is_mariadb", False) else conn.dialect.name
    state = _revision_state(rev, head)
    if fmt is Format.json:
        emit_object(
            {
                "database": where(location),
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
        ("database", where(location)),
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


def _size_text(size: int | None, detail: dict[str, int]) -> str | None:
    if size is None:
        return None  # an in-memory ledger has no size on disk

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
    with failing(location):
        engine = db.make_engine(location, poolclass=NullPool)
    try:
        with failing(location):
            try:
                with engine.connect() as conn:
                    rev = db.current_revision(conn)
                head = db.head_revision()
                if rev == head:
                    typer.echo(f"already at {head} ({where(location)})")
                    return
                before, after = db.upgrade(engine)
            except DBAPIError as exc:
                fail(f"cannot migrate {where(location)}: {db_message(exc)}")
            typer.echo(f"migrated {where(location)} from {before or 'empty'} to {after}")
    finally:
        engine.dispose()


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
    spool_dir = config.settings().spool_dir
    path = spool.default_spool_path(db.normalize_url(location), spool_dir)
    if not spool.leftovers(path):
        typer.echo(f"nothing to recover: no spool file at {path}")
        _list_dead_letters(path)
        return
    with failing():
        ledger = Ledger(location, spool_dir=spool_dir)
    try:
        counts = ledger.recovered_at_open or ledger.recover()
    finally:
        ledger.close()
    dead = counts.get("dead_lettered", 0)
    typer.echo(
        f"recovered {path} into {where(location)}: {counts['written']} written, "
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
