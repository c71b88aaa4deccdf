"""Merging rows from another ledger into this one: import, copy, pickle import.

Surrogate ids never cross ledgers in a merge: a response row carries its *source* ``id``
so that cache entries and audit rows can be remapped to the target's ids; everything else
is matched by its natural identity:

- requests by ``request_hash``;
- responses by ``(request_hash, response_hash)``;
- cache entries by ``(namespace, request_hash, slot)`` (an existing target entry wins);
- audit rows by ``call_uuid`` (their tags travel with them as ``call_tags``).

The one exception is a copy of a whole ledger into an empty one (``Merger(keep_ids=...)``):
it writes the rows as they are, ids included, so nothing has to be mapped or remembered.
Rows are written with executemany of statements compiled once (statements.py), on the
caller's connection and inside its transaction. In a verbatim copy from one SQLite file to
another, a batch may instead be an :class:`Attached` range of the source's rows, which
SQLite copies itself (INSERT ... SELECT from the source attached to the target's connection).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, insert, literal, select, text
from sqlalchemy.engine import Connection

from .models import CacheEntry, CallLog, CallTag, Request, Response
from .repository import Ledger
from .selection import ID_TABLES
from .statements import Compiled, insert_ignore, insert_rows

_REQ: Any = Request.__table__
_RESP: Any = Response.__table__
_ENTRY: Any = CacheEntry.__table__
_LOG: Any = CallLog.__table__
_TAGS: Any = CallTag.__table__

MERGED = ("requests", "responses", "cache_entries", "calls", "call_tags")
"""The kinds of rows a merge counts; ``calls`` are ``call_log`` rows."""
_IN_CHUNK = 1000  # values per IN (...) list: well inside every engine's bind-parameter limit


# --- batches SQLite copies itself ------------------------------------------------

# The key each table is read and written in: the order the row-by-row copy writes them in
# (so even the hidden rowids of requests come out the same).
_ATTACHED_KEYS = {
    "requests": "request_hash",
    "responses": "id",
    "cache_entries": "id",
    "call_log": "id",
}


@dataclass(frozen=True)
class Attached:
    """A batch of a verbatim SQLite-to-SQLite copy: the rows of ``table`` in the ledger
    attached to the target's connection as ``schema`` whose key is in ``(after, upto]``
    (None: unbounded), in key order. For ``call_log`` the batch also holds those calls'
    ``call_tags``. SQLite moves the values from file to file as they are stored, so the
    copy is verbatim without a row passing through Python."""

    schema: str
    table: str
    after: Any
    upto: Any

    def where(self, key: str) -> tuple[str, list[Any]]:
        """The WHERE clause (or "") and its parameters selecting this range by ``key``."""
        conds, params = [], []
        if self.after is not None:
            conds.append(f"{key} > ?")
            params.append(self.after)
        if self.upto is not None:
            conds.append(f"{key} <= ?")
            params.append(self.upto)
        return (" WHERE " + " AND ".join(conds) if conds else ""), params


def attached_batches(
    conn: Connection, schema: str, table: str, batch_size: int
) -> Iterator[Attached]:
    """``table`` of the ledger attached as ``schema`` in ranges of at most ``batch_size``
    rows, each range's end found by a seek in the key's index (the last one open-ended):
    the number of batches follows the number of rows, never the width of the key's range
    (ids 1 and 2**63-1 are two rows, not 2**63 / batch_size empty ranges)."""
    key = _ATTACHED_KEYS[table]
    after = None
    while True:
        where = f" WHERE {key} > ?" if after is not None else ""
        upto = conn.exec_driver_sql(
            f"SELECT {key} FROM {schema}.{table}{where} ORDER BY {key} LIMIT 1 OFFSET ?",
            (*([after] if after is not None else []), batch_size - 1),
        ).scalar()
        yield Attached(schema, table, after, upto)
        if upto is None:
            return
        after = upto


def _copy_attached(conn: Connection, batch: Attached, table: Any, key: str, order: str) -> int:
    """INSERT ... SELECT of ``batch``'s rows of ``table`` by ``key``, in ``order`` (same
    columns both sides: the source is at the target's schema revision); returns how many
    rows were written."""
    columns = ", ".join(c.name for c in table.c)
    where, params = batch.where(key)
    cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cur.execute(
            f"INSERT INTO main.{table.name} ({columns}) SELECT {columns} "
            f"FROM {batch.schema}.{table.name}{where} ORDER BY {order}",
            params,
        )
        return int(cur.rowcount)
    finally:
        cur.close()


class _Insert:
    """One INSERT compiled for the target's dialect, run with executemany on the DBAPI cursor."""

    def __init__(self, conn: Connection, stmt: Any, table: Any, keys: list[str]) -> None:
        self.conn, self.compiled = conn, Compiled(stmt, conn.dialect, keys, table)

    def run(self, rows: Sequence[dict[str, Any]]) -> None:
        insert_rows(self.conn, self.compiled, rows)


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
        dialect = conn.dialect
        names = (lambda t: [c.name for c in t.c]) if self.verbatim else _names
        self._insert = {
            "requests": _Insert(
                conn,
                insert_ignore(dialect, _REQ, ["request_hash"]),
                _REQ,
                [c.name for c in _REQ.c],
            ),
            "responses": _Insert(conn, insert(_RESP), _RESP, names(_RESP)),
            "cache_entries": _Insert(
                conn,
                insert_ignore(dialect, _ENTRY, ["namespace", "request_hash", "slot"]),
                _ENTRY,
                names(_ENTRY),
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

    def _attached(self, batch: Attached, kind: str, table: Any, key: str, order: str = "") -> None:
        """Copy an Attached batch (verbatim merges only: nothing is matched or refused)."""
        if not self.verbatim:
            raise TypeError("an Attached batch is for a verbatim copy into an empty ledger")
        self.result.tallies[kind].added += _copy_attached(
            self.conn, batch, table, key, order or key
        )

    def _max_id(self, table: Any) -> int:
        return int(self.conn.execute(select(func.max(table.c.id))).scalar() or 0)

    def requests(self, rows: Sequence[dict[str, Any]] | Attached) -> None:
        tally = self.result.tallies["requests"]
        if isinstance(rows, Attached):
            self._attached(rows, "requests", _REQ, "request_hash")
            return
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
        rows: Sequence[dict[str, Any]] | Attached,
        refused: Callable[[dict[str, Any]], str | None] = lambda r: None,
    ) -> None:
        """Rows carry their source ``id``; ``refused`` may name a reason to refuse a row."""
        tally = self.result.tallies["responses"]
        if isinstance(rows, Attached):  # a copy refuses no response
            self._attached(rows, "responses", _RESP, "id")
            return
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

    def cache_entries(self, rows: Sequence[dict[str, Any]] | Attached) -> None:
        """Rows' ``response_id`` is the source's; an entry already in the target wins."""
        tally = self.result.tallies["cache_entries"]
        if isinstance(rows, Attached):  # so no response was refused
            self._attached(rows, "cache_entries", _ENTRY, "id")
            return
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

    def calls(self, rows: Sequence[dict[str, Any]] | Attached) -> None:
        """Audit rows keep their call_uuid; ``call_tags`` (name -> value) go with them."""
        tally, tags = self.result.tallies["calls"], self.result.tallies["call_tags"]
        if self.verbatim or isinstance(rows, Attached):
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

    def _calls_verbatim(self, rows: Sequence[dict[str, Any]] | Attached) -> None:
        """Audit rows with their source ``id``, which their tags refer to."""
        if isinstance(rows, Attached):  # no response was refused
            self._attached(rows, "calls", _LOG, "id")
            self._attached(rows, "call_tags", _TAGS, "call_id", "call_id, name")
            return
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
