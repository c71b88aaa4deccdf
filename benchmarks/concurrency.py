"""Throughput with several processes and threads on one SQLite file.

Each worker process opens the contender itself (its own engine or connections),
builds its threads' calls in advance, waits at a barrier, then runs them: a mix of
seeded items (hits) and fresh ones (stores, answered by the stub). The figure is all
calls over the wall time from the first start to the last finish. Afterwards the
audit table must have gained exactly one row per call, or the figure is marked as
not trustworthy.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

from . import seed, workload
from .children import collect, context, summarise
from .contenders import Contender, Floor, Ledger

KINDS: dict[str, type[Contender]] = {"ledger": Ledger, "floor": Floor}
AUDIT_TABLE = {"ledger": "call_log", "floor": "audit"}
FRESH = 700_000_000


def _items(size: int, proc: int, thread: int, ops: int, hit_ratio: float) -> list[int]:
    rng = random.Random(f"{size}/{proc}/{thread}")
    fresh = FRESH + proc * 10_000_000 + thread * 1_000_000
    return [rng.randrange(size) if rng.random() < hit_ratio else fresh + k for k in range(ops)]


def _worker(
    kind: str,
    workdir: str,
    size: int,
    proc: int,
    threads: int,
    ops: int,
    hit_ratio: float,
    barrier: Any,
    out: Any,
) -> None:
    from llm_ledger import config

    config.reset_settings({})
    c = KINDS[kind](Path(workdir), size)
    c.open()
    plans = [
        [c.prepare(workload.item(i)) for i in _items(size, proc, t, ops, hit_ratio)]
        for t in range(threads)
    ]
    done = [0] * threads
    errors: list[str] = []

    def run(t: int) -> None:
        for args in plans[t]:
            try:
                if c.call(*args) is not None:
                    done[t] += 1
                else:
                    errors.append("send_message returned None")
            except Exception as exc:  # noqa: BLE001 - counted and reported, not hidden
                errors.append(f"{type(exc).__name__}: {exc}"[:200])

    pool = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    barrier.wait()
    t0 = time.monotonic()
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    c.finish()  # records still queued (writes="journal") are written inside the timing
    t1 = time.monotonic()
    c.close()
    out.put({"t0": t0, "t1": t1, "calls": sum(done), "errors": errors, "api_calls": c.api.calls})


def measure(
    kind: str,
    workdir: Path,
    size: int,
    *,
    processes: int = 4,
    threads: int = 4,
    ops: int = 250,
    hit_ratio: float = 0.8,
) -> dict[str, Any]:
    """Calls per second of ``processes`` x ``threads`` callers, each making ``ops`` calls."""
    c = KINDS[kind](workdir, size)
    table = AUDIT_TABLE[kind]
    mark = seed.marks(c.db, c.tables)
    ctx = context()
    barrier = ctx.Barrier(processes)
    out = ctx.Queue()
    procs = [
        ctx.Process(
            target=_worker,
            args=(kind, str(workdir), size, p, threads, ops, hit_ratio, barrier, out),
        )
        for p in range(processes)
    ]
    for p in procs:
        p.start()
    results = collect(procs, out)
    audit_rows = seed.added(c.db, {table: mark[table]})[table]
    seed.trim(c.db, mark)
    spool = Path(str(c.db) + ".spool.jsonl")
    summary = summarise(
        results, audit_rows, processes=processes, threads=threads, hit_ratio=hit_ratio
    )
    return {**summary, "spooled": spool.exists()}
