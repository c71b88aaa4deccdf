"""The repository: the only code that reads or writes the ledger's tables.

The client asks it two things: is there a stored answer for this request
(:meth:`Ledger.lookup`), and record this call (:meth:`Ledger.record`). One
call is one transaction: its request, its paid answers, their cache entries,
the audit row and its tags land together or not at all.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Engine, Insert, and_, func, insert, select
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from . import db, spool
from .keys import canonical_json, hash_json
from .models import CacheEntry, CallLog, CallTag, Request, Response
from .policy import StoreMode
from .records import Answer, CallRecord, Stored

log = structlog.get_logger("llm_ledger")

_ENTRY = CacheEntry.__table__
_RESP = Response.__table__
_REQ = Request.__table__
_LOG = CallLog.__table__
_TAGS = CallTag.__table__

_STORED_COLUMNS = (
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


def _stored(row: Any) -> Stored:
    return Stored(
        response_id=row[0],
        response=row[1],
        stored_at=row[2],
        prompt_tokens=row[3],
        completion_tokens=row[4],
        cached_tokens=row[5],
        reasoning_tokens=row[6],
        total_tokens=row[7],
        cost_usd=row[8],
    )


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
        self.engine = engine or db.make_engine(location)
        self.dialect = self.engine.dialect.name
        self.revision = db.ensure_schema(self.engine, auto_upgrade=auto_upgrade)
        self.spool_path: Path = spool.default_spool_path(self.url, spool_dir)
        if self.spool_path.exists():
            self.recover()

    def __repr__(self) -> str:
        return f"Ledger({db.describe(self.url)!r})"

    def close(self) -> None:
        self.engine.dispose()

    # --- reads --------------------------------------------------------------

    def lookup(self, namespace: str, request_hash: str, slot: int = 0) -> Stored | None:
        stmt = (
            select(*_STORED_COLUMNS)
            .join_from(_ENTRY, _RESP, _RESP.c.id == _ENTRY.c.response_id)
            .where(
                _ENTRY.c.namespace == namespace,
                _ENTRY.c.request_hash == request_hash,
                _ENTRY.c.slot == slot,
            )
        )
        with self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        return _stored(row) if row is not None else None

    def lookup_many(self, namespace: str, hashes: Sequence[str]) -> dict[str, Stored]:
        """Slot-0 answers for several requests at once (embedding items)."""
        if not hashes:
            return {}
        stmt = (
            select(_ENTRY.c.request_hash, *_STORED_COLUMNS)
            .join_from(_ENTRY, _RESP, _RESP.c.id == _ENTRY.c.response_id)
            .where(
                _ENTRY.c.namespace == namespace,
                _ENTRY.c.request_hash.in_(sorted(set(hashes))),
                _ENTRY.c.slot == 0,
            )
        )
        with self.engine.connect() as conn:
            return {row[0]: _stored(row[1:]) for row in conn.execute(stmt)}

    def has_call(self, call_uuid: str) -> bool:
        with self.engine.connect() as conn:
            return (
                conn.execute(select(_LOG.c.id).where(_LOG.c.call_uuid == call_uuid)).first()
                is not None
            )

    # --- writes -------------------------------------------------------------

    def record(self, rec: CallRecord) -> dict[int, Stored]:
        """Write one call. Returns, per answer index, the other writer's entry where a race was lost."""
        with self.engine.begin() as conn:
            return self._record(conn, rec)

    def record_or_spool(self, rec: CallRecord) -> dict[int, Stored]:
        """Write one call; if the database fails, spool it so the paid answer is not lost."""
        try:
            return self.record(rec)
        except (SQLAlchemyError, OSError) as exc:
            spool.append(self.spool_path, rec)
            log.error(
                "ledger.write_failed",
                db=db.describe(self.url),
                call_uuid=rec.call_uuid,
                request_hash=rec.request_hash,
                error=str(getattr(exc, "orig", exc))[:300],
                spool=str(self.spool_path),
            )
            return {}

    def _record(self, conn: Connection, rec: CallRecord) -> dict[int, Stored]:
        requests = {rec.request_hash: (rec.kind, rec.model, rec.request)}
        for a in rec.answers:
            requests.setdefault(a.request_hash, (a.kind, a.model, a.request))
        self._insert_requests(conn, requests, rec.created_at)
        winners: dict[int, Stored] = {}
        response_ids: list[int] = []
        for i, a in enumerate(rec.answers):
            rid = self._insert_response(conn, a, rec.created_at)
            response_ids.append(rid)
            if a.store is StoreMode.INSERT:
                winner = self._insert_entry(conn, a, rid, rec.created_at)
                if winner is not None:
                    winners[i] = winner
            elif a.store is StoreMode.REPLACE:
                self._upsert_entry(conn, a, rid, rec.created_at)
        response_id = rec.served_response_id
        if rec.primary_answer is not None:
            p = rec.primary_answer
            response_id = winners[p].response_id if p in winners else response_ids[p]
        u = rec.usage
        call_id = conn.execute(
            insert(_LOG).values(
                call_uuid=rec.call_uuid,
                created_at=rec.created_at,
                kind=rec.kind,
                api_type=rec.api_type,
                endpoint_host=rec.endpoint_host,
                model=rec.model,
                namespace=rec.namespace,
                request_hash=rec.request_hash,
                slot=rec.slot,
                response_id=response_id,
                cache_status=rec.cache_status,
                status=rec.status,
                attempts=rec.attempts,
                latency_ms=rec.latency_ms,
                prompt_tokens=u.prompt_tokens,
                completion_tokens=u.completion_tokens,
                cached_tokens=u.cached_tokens,
                reasoning_tokens=u.reasoning_tokens,
                total_tokens=u.total_tokens,
                tokens_estimated=u.estimated,
                items_total=rec.items_total,
                items_hit=rec.items_hit,
                error_type=rec.error_type,
                error_message=rec.error_message,
                cost_usd=rec.cost_usd,
                saved_usd=rec.saved_usd,
                cost_note=rec.cost_note,
                price_version=rec.price_version,
                run=rec.run,
                template=rec.template,
                tags=rec.tags or None,
                library_version=rec.library_version,
            )
        ).inserted_primary_key[0]
        if rec.tags:
            conn.execute(
                insert(_TAGS),
                [{"call_id": call_id, "name": k, "value": v} for k, v in rec.tags.items()],
            )
        return winners

    def _insert_requests(
        self, conn: Connection, requests: dict[str, tuple[str, str, dict[str, Any]]], now: datetime
    ) -> None:
        rows = [
            {"request_hash": h, "kind": k, "model": m, "request": body, "created_at": now}
            for h, (k, m, body) in requests.items()
        ]
        if len(rows) > 1:
            # Only insert the ones not there yet: keeps executemany portable.
            present = set(
                conn.execute(
                    select(_REQ.c.request_hash).where(_REQ.c.request_hash.in_(list(requests)))
                ).scalars()
            )
            rows = [r for r in rows if r["request_hash"] not in present]
            if not rows:
                return
        conn.execute(self._insert_ignore(_REQ, ["request_hash"]), rows)

    def _insert_response(self, conn: Connection, a: Answer, now: datetime) -> int:
        u = a.usage
        return conn.execute(
            insert(_RESP).values(
                request_hash=a.request_hash,
                response_hash=hash_json(canonical_json(a.response)),
                response=a.response,
                prompt_tokens=u.prompt_tokens,
                completion_tokens=u.completion_tokens,
                cached_tokens=u.cached_tokens,
                reasoning_tokens=u.reasoning_tokens,
                total_tokens=u.total_tokens,
                tokens_estimated=u.estimated,
                cost_usd=a.cost_usd,
                cost_note=a.cost_note,
                price_version=a.price_version,
                created_at=now,
            )
        ).inserted_primary_key[0]

    def _insert_entry(self, conn: Connection, a: Answer, rid: int, now: datetime) -> Stored | None:
        values = {
            "namespace": a.namespace,
            "request_hash": a.request_hash,
            "slot": a.slot,
            "response_id": rid,
            "created_at": now,
            "updated_at": now,
        }
        result = conn.execute(
            self._insert_ignore(_ENTRY, ["namespace", "request_hash", "slot"]), values
        )
        if result.rowcount == 1:
            return None
        row = conn.execute(
            select(*_STORED_COLUMNS)
            .join_from(_ENTRY, _RESP, _RESP.c.id == _ENTRY.c.response_id)
            .where(
                _ENTRY.c.namespace == a.namespace,
                _ENTRY.c.request_hash == a.request_hash,
                _ENTRY.c.slot == a.slot,
            )
        ).first()
        return _stored(row) if row is not None else None

    def _upsert_entry(self, conn: Connection, a: Answer, rid: int, now: datetime) -> None:
        values = {
            "namespace": a.namespace,
            "request_hash": a.request_hash,
            "slot": a.slot,
            "response_id": rid,
            "created_at": now,
            "updated_at": now,
        }
        update = {"response_id": rid, "updated_at": now}
        keys = ["namespace", "request_hash", "slot"]
        if self.dialect in ("mysql", "mariadb"):
            stmt: Any = mysql.insert(_ENTRY).values(values).on_duplicate_key_update(**update)
        else:
            ins = (
                (postgresql if self.dialect == "postgresql" else sqlite)
                .insert(_ENTRY)
                .values(values)
            )
            stmt = ins.on_conflict_do_update(index_elements=keys, set_=update)
        conn.execute(stmt)

    def _insert_ignore(self, table: Any, keys: list[str]) -> Insert:
        if self.dialect == "postgresql":
            return postgresql.insert(table).on_conflict_do_nothing(index_elements=keys)
        if self.dialect == "sqlite":
            return sqlite.insert(table).on_conflict_do_nothing(index_elements=keys)
        # MySQL/MariaDB: IGNORE only ever meets the unique key here (the referenced rows
        # are written earlier in the same transaction).
        return insert(table).prefix_with("IGNORE")

    # --- spool --------------------------------------------------------------

    def recover(self) -> dict[str, int]:
        """Write spooled records into the ledger, each exactly once; remove the spool."""
        with _recover_lock:
            records, unreadable = spool.read(self.spool_path)
            written = already = 0
            for rec in records:
                try:
                    with self.engine.begin() as conn:
                        exists = conn.execute(
                            select(_LOG.c.id).where(_LOG.c.call_uuid == rec.call_uuid)
                        ).first()
                        if exists:
                            already += 1
                            continue
                        self._record(conn, rec)
                        written += 1
                except (SQLAlchemyError, OSError) as exc:
                    log.error(
                        "ledger.recover_failed",
                        db=db.describe(self.url),
                        error=str(getattr(exc, "orig", exc))[:300],
                        spool=str(self.spool_path),
                    )
                    return {
                        "written": written,
                        "already_present": already,
                        "unreadable": unreadable,
                        "pending": len(records) - written - already,
                    }
            if records or unreadable:
                if unreadable:
                    bad = self.spool_path.with_name(self.spool_path.name + ".unreadable")
                    self.spool_path.replace(bad)
                else:
                    self.spool_path.unlink()
                log.warning(
                    "ledger.recovered",
                    db=db.describe(self.url),
                    written=written,
                    already_present=already,
                    unreadable=unreadable,
                )
            return {
                "written": written,
                "already_present": already,
                "unreadable": unreadable,
                "pending": 0,
            }

    # --- helpers for reports and tests --------------------------------------

    def count(self, table: Any, *where: Any) -> int:
        with self.engine.connect() as conn:
            stmt = select(func.count()).select_from(table)
            if where:
                stmt = stmt.where(and_(*where))
            return int(conn.execute(stmt).scalar_one())


_recover_lock = threading.Lock()
_ledgers: dict[tuple[str, str | None], Ledger] = {}
_ledgers_lock = threading.Lock()


def open_ledger(location: str, *, spool_dir: str | None = None) -> Ledger:
    """The shared :class:`Ledger` for a location (one engine per database per process)."""
    key = (db.normalize_url(location), spool_dir)
    with _ledgers_lock:
        ledger = _ledgers.get(key)
        if ledger is None:
            ledger = _ledgers[key] = Ledger(location, spool_dir=spool_dir)
        return ledger


def close_all() -> None:
    with _ledgers_lock:
        for ledger in _ledgers.values():
            ledger.close()
        _ledgers.clear()


__all__ = ["Ledger", "open_ledger", "close_all"]
