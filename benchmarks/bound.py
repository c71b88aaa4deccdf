"""What the ledger's schema costs a hit and a store: ``python -m benchmarks.bound``.

The main benchmark's row "same, journaled, written every 128 calls"
(``floor.LedgerSchemaJournalFloor``) is the write-behind design at its cheapest on the
ledger's tables: raw sqlite3, no pipeline. This takes that bound apart. Each variant runs
the same journaled calls on its own copy of the seeded ledger, with one part of the schema
taken away, beside the floor, interleaved in rounds (medians):

- the schema as shipped (audit rows with time-ordered ``call_uuid``, as the ledger makes them);
- without ``call_log``'s index on ``request_hash``, on ``response_id``, both (the two
  random-key indexes the foreign keys and ``prune`` use), and also without the two
  covering cost indexes (by model, by day: the cost report's);
- without the answers' search triggers (FTS5, migration 0008: stores only);
- a hit's audit row cut to five columns with only ``call_uuid`` unique, and no audit row
  at all (the journal line only): what any ledger that logs hits must at least pay.

Timing decides nothing here; a variant that does not write every call's rows exactly once,
or calls the API on a hit, stops the run. Figures go to stdout as a Markdown table
(docs/benchmarks.md keeps the last run's).
"""

from __future__ import annotations

import argparse
import itertools
import random
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_ledger import calls

from . import contenders, floor, latency, seed, workload
from .run import parse_size

_SLIM = (
    "CREATE TABLE hit_slim (id INTEGER PRIMARY KEY, call_uuid TEXT NOT NULL UNIQUE, "
    "created_at TEXT NOT NULL, response_id INTEGER, latency_ms REAL)"
)


class _Journaled(floor.LedgerSchemaJournalFloor):
    """The bound, with call ids made as the ledger makes them (version 7: time-ordered)."""

    @staticmethod
    def _log_row(*args: Any, **kwargs: Any) -> list[Any]:  # type: ignore[override]
        row = floor.LedgerSchemaFloor._log_row(*args, **kwargs)
        row[0] = calls._uuid7()
        return row


class _SlimHits(_Journaled):
    @staticmethod
    def _insert_hits(conn: sqlite3.Connection, logs: list[list[Any]]) -> None:
        conn.executemany(
            "INSERT INTO hit_slim (call_uuid, created_at, response_id, latency_ms) "
            "VALUES (?, ?, ?, ?)",
            [(log[0], log[1], log[9], log[13]) for log in logs],
        )


class _NoHitRow(_Journaled):
    @staticmethod
    def _insert_hits(conn: sqlite3.Connection, logs: list[list[Any]]) -> None:
        pass


@dataclass(frozen=True)
class Variant:
    label: str
    drop: tuple[str, ...] = ()  # indexes and triggers taken away from the copy
    impl: type[_Journaled] = _Journaled
    hits_table: str = "call_log"  # where its hits' rows go (None: nowhere)
    stores: bool = True  # measured on stores (the hit-only variants are not)


_RANDOM_KEYS = ("ix_call_log_request_hash", "ix_call_log_response_id")
_COSTS = ("ix_call_log_costs_by_model", "ix_call_log_costs_by_day")
_SEARCH = ("answer_search_insert", "answer_search_update", "answer_search_delete")

VARIANTS = (
    Variant("the ledger's schema, as shipped"),
    Variant("without call_log's request_hash index", drop=_RANDOM_KEYS[:1]),
    Variant("without call_log's response_id index", drop=_RANDOM_KEYS[1:]),
    Variant("without both (the random-key indexes)", drop=_RANDOM_KEYS),
    Variant("without those and the two cost indexes", drop=_RANDOM_KEYS + _COSTS),
    Variant("without the answers' search triggers", drop=_SEARCH),
    Variant(
        "hit row: 5 columns, call_uuid unique only",
        impl=_SlimHits,
        hits_table="hit_slim",
        stores=False,
    ),
    Variant("hit row: none (journal line only)", impl=_NoHitRow, hits_table="", stores=False),
)


def _copy(source: Path, target: Path, drop: tuple[str, ...]) -> None:
    shutil.copyfile(source, target)
    conn = sqlite3.connect(target)
    try:
        for name in drop:
            kind = "TRIGGER" if name in _SEARCH else "INDEX"
            conn.execute(f"DROP {kind} {name}")
        conn.execute(_SLIM)
        conn.commit()
    finally:
        conn.close()


def _read_through(path: Path) -> None:
    """Read a file once, so the rounds find it in the OS page cache (at 1M, after another
    variant's copy, the floor's file would otherwise be read from disk, hit by hit)."""
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


def _timed(call: Callable[..., Any], finish: Callable[[], None], args: list[Any]) -> float:
    latency.settle()  # no batch pays for an earlier one's garbage
    return latency.time_batch(call, args, finish)


def measure(
    workdir: Path, size: int, hits: int, stores: int, rounds: int, seed_: int = 7
) -> dict[str, dict[str, list[float]]]:
    """Microseconds per hit and per store, each round, for every variant and for the floor
    beside it (``floor hit`` / ``floor store``: a variant's ratios are to its own floor).

    One variant's copy at a time, read through with the floor's file before its rounds: at
    1M entries eight copies would not fit the page cache, and the figures would measure the
    disk. In each round the floor and the variant take
    turns at going first, on the same items.
    """
    ledger = contenders.Ledger(workdir, size)
    ledger.seed()
    base = contenders.Floor(workdir, size)
    base.seed()
    base.open()
    assert base.impl is not None
    rng = random.Random(seed_)
    fresh = itertools.count(latency.FRESH)
    out: dict[str, dict[str, list[float]]] = {}
    try:
        for v in VARIANTS:
            r = out[v.label] = {"hit": [], "store": [], "floor hit": [], "floor store": []}
            with tempfile.TemporaryDirectory(dir=workdir) as tmp:
                path = Path(tmp) / "variant.db"
                _copy(ledger.db, path, v.drop)
                for f in (path, base.db):
                    _read_through(f)
                impl = v.impl(str(path), contenders.StubAPI(dict), workload.PARAMS)
                try:
                    for k in range(rounds):
                        hit_items = [workload.item(rng.randrange(size)) for _ in range(hits)]
                        store_items = [workload.item(next(fresh)) for _ in range(stores)]
                        turns = [False, True] if k % 2 else [True, False]
                        for floor_turn in turns:
                            if floor_turn:
                                _floor_round(base, hit_items, store_items, r)
                            else:
                                _round(v, impl, path, hit_items, store_items, r)
                finally:
                    impl.close()
    finally:
        base.close()
    return out


def _floor_round(
    base: contenders.Floor,
    hit_items: list[workload.Item],
    store_items: list[workload.Item],
    out: dict[str, list[float]],
) -> None:
    assert base.impl is not None
    with base.restoring():
        for kind, items in (("hit", hit_items), ("store", store_items)):
            args = [(it.model, it.messages) for it in items]
            out[f"floor {kind}"].append(_timed(base.call, lambda: None, args))
    base.impl.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # as the variants do


def _round(
    v: Variant,
    impl: _Journaled,
    path: Path,
    hit_items: list[workload.Item],
    store_items: list[workload.Item],
    out: dict[str, list[float]],
) -> None:
    """One round of hits (and stores) through one variant, checked: every call's rows
    written once, no API call on a hit, exactly one per store."""
    tables = seed.LEDGER_TABLES + ("hit_slim",)
    mark = seed.marks(path, tables)
    api_calls = impl.api.calls  # type: ignore[attr-defined]
    args = [(it.model, it.messages) for it in hit_items]
    out["hit"].append(_timed(impl.call, impl.finish, args))
    want = {t: 0 for t in tables}
    if v.hits_table:
        want[v.hits_table] = len(hit_items)
    if v.stores:
        args = [(it.model, it.messages) for it in store_items]
        out["store"].append(_timed(impl.call, impl.finish, args))
        for t in seed.LEDGER_TABLES:
            want[t] += len(store_items)
    got = seed.added(path, mark)
    if got != want or impl.api.calls - api_calls != (len(store_items) if v.stores else 0):  # type: ignore[attr-defined]
        raise SystemExit(f"{v.label}: wrote {got}, expected {want}")
    seed.trim(path, mark)
    impl.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # each round from an empty WAL


def table(results: dict[str, dict[str, list[float]]], size: int) -> list[str]:
    """The Markdown table: median µs per hit and per store, each variant's ratio to the
    floor measured beside it, and the floor's own medians over every round."""
    lines = [
        f"| {size:,} entries, medians | hit µs | ×floor | store µs | ×floor |",
        "|---|---|---|---|---|",
    ]
    floors = {
        kind: [x for r in results.values() for x in r[f"floor {kind}"]] for kind in ("hit", "store")
    }
    rows = [("floor: raw sqlite3, minimal schema", {**floors, "floor hit": [], "floor store": []})]
    for label, r in [*rows, *results.items()]:
        cells = []
        for kind in ("hit", "store"):
            if r[kind]:
                us = statistics.median(r[kind])
                ref = statistics.median(r[f"floor {kind}"] or r[kind])
                cells += [f"{us:.1f}", f"{us / ref:.2f}"]
            else:
                cells += ["–", "–"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.bound", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--size", default="10k", help="ledger size (default 10k)")
    ap.add_argument("--hits", type=int, default=2000, help="hits per round and variant")
    ap.add_argument("--stores", type=int, default=500, help="stores per round and variant")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--workdir", help="seeded stores to reuse (as for benchmarks.run)")
    args = ap.parse_args(argv)
    size = parse_size(args.size)
    with tempfile.TemporaryDirectory(prefix="llm_ledger_bound-") as tmp:
        workdir = Path(args.workdir) if args.workdir else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        results = measure(workdir, size, args.hits, args.stores, args.rounds)
    print("\n".join(table(results, size)))
    print(f"\n({args.rounds} rounds, {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
