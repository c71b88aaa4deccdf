"""Keeping a ledger trim: ``prune`` (delete what is older than a date), ``vacuum``, its size.

docs/transfer.md says exactly what a prune deletes. Deletes run in batches, one
transaction each, so a live ledger is never locked for long.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, and_, bindparam, exists, false, func, select, text
from sqlalchemy.engine import Connection

from ..log import logger
from . import db
from .models import TABLES, CacheEntry, CallLog, CallTag, Request, Response
from .repository import Ledger
from .selection import opened, snapshot

log = logger

_REQ: Any = Request.__table__
_RESP: Any = Response.__table__
_ENTRY: Any = CacheEntry.__table__
_LOG: Any = CallLog.__table__
_TAGS: Any = CallTag.__table__

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


def ledger_size(conn: Connection, url: str) -> tuple[int | None, dict[str, int]]:
    """The ledger's bytes on disk, and the parts they were added from (``llm-ledger info``).

    SQLite: the file and its WAL (None in memory). PostgreSQL and MariaDB: the ledger's
    tables with their indexes and TOAST, ``alembic_version`` included, in the current
    schema; PostgreSQL adds the whole database's size as ``database_bytes``.
    """
    name = conn.dialect.name
    if name == "sqlite":
        path = db.sqlite_path(url)
        if path is None:
            return None, {}
        wal = path.with_name(path.name + "-wal")
        detail = {
            "file_bytes": path.stat().st_size if path.exists() else 0,
            "wal_bytes": wal.stat().st_size if wal.exists() else 0,
        }
        return detail["file_bytes"] + detail["wal_bytes"], detail
    names = {"names": [*TABLES, "alembic_version"]}
    if name == "postgresql":
        total = conn.execute(
            text(
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "WHERE c.relkind = 'r' AND c.relname IN :names "
                "AND c.relnamespace = to_regnamespace(current_schema())"
            ).bindparams(bindparam("names", expanding=True)),
            names,
        ).scalar_one()
        database = conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one()
        return int(total), {"database_bytes": int(database)}
    if name in ("mysql", "mariadb"):
        total = conn.execute(
            text(
                "SELECT COALESCE(SUM(data_length + index_length), 0) FROM information_schema.tables "
                "WHERE table_schema = DATABASE() AND table_name IN :names"
            ).bindparams(bindparam("names", expanding=True)),
            names,
        ).scalar_one()
        return int(total), {}
    return None, {}


def vacuum(ledger_or_location: Ledger | str) -> dict[str, Any]:
    """Give free space back: SQLite VACUUM, PostgreSQL VACUUM ANALYZE, MariaDB OPTIMIZE TABLE."""
    with opened(ledger_or_location) as ledger:
        with ledger.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            before, _ = ledger_size(conn, ledger.url)
            if ledger.dialect == "sqlite":
                conn.exec_driver_sql("VACUUM")
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            elif ledger.dialect == "postgresql":
                conn.exec_driver_sql(f"VACUUM ANALYZE {', '.join(TABLES)}")
            elif ledger.dialect in ("mysql", "mariadb"):
                conn.exec_driver_sql(f"OPTIMIZE TABLE {', '.join(TABLES)}").all()
            after, _ = ledger_size(conn, ledger.url)
        log.info(
            "ledger.vacuumed", db=db.describe(ledger.url), bytes_before=before, bytes_after=after
        )
        return {
            "database": db.describe(ledger.url),
            "engine": ledger.dialect,
            "bytes_before": before,
            "bytes_after": after,
        }
