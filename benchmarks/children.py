"""Child processes for the parts that need them (concurrency, peak memory, seeding help).

Children fork from a server process that has already imported llm_ledger, the SDK and
SQLAlchemy (``forkserver`` with preloading), so each costs milliseconds rather than the
seconds a fresh interpreter spends importing. They never inherit this process's open
databases or threads. Where ``forkserver`` does not exist, ``spawn`` is used.
"""

from __future__ import annotations

import multiprocessing
import queue
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any

PRELOAD = ["benchmarks.contenders", "benchmarks.bulk", "benchmarks.seed"]


@lru_cache(maxsize=1)
def context() -> Any:
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        return ctx
    return multiprocessing.get_context("spawn")


def collect(procs: list[Any], out: Any, timeout: float = 1800) -> list[dict[str, Any]]:
    """One result per process; a process that dies without one is an error, not a hang."""
    results: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(results) < len(procs):
        try:
            results.append(out.get(timeout=0.2))
        except queue.Empty:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead or time.monotonic() > deadline:
                for p in procs:
                    p.kill()
                raise RuntimeError(
                    f"benchmark child failed (exit codes {[p.exitcode for p in procs]})"
                ) from None
    for p in procs:
        p.join()
    return results


def summarise(
    results: list[dict[str, Any]],
    audit_rows: int,
    *,
    processes: int,
    threads: int,
    hit_ratio: float,
) -> dict[str, Any]:
    """One load run's figures from its children's results: rate, calls, errors, audit rows."""
    calls = sum(r["calls"] for r in results)
    errors = [e for r in results for e in r["errors"]]
    wall = max(r["t1"] for r in results) - min(r["t0"] for r in results)
    return {
        "calls_per_s": round(calls / wall, 1),
        "calls": calls,
        "wall_s": round(wall, 3),
        "processes": processes,
        "threads": threads,
        "hit_ratio": hit_ratio,
        "api_calls": sum(r["api_calls"] for r in results),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "audit_rows_added": audit_rows,
        "audit_rows_ok": audit_rows == calls and not errors,
    }


def _child(out: Any, fn: Callable[..., dict[str, Any]], args: tuple[Any, ...]) -> None:
    out.put(fn(*args))


def in_child(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """``fn(*args)`` in a fresh child process; ``fn`` must be importable (module level)."""
    ctx = context()
    out = ctx.Queue()
    proc = ctx.Process(target=_child, args=(out, fn, args))
    proc.start()
    return collect([proc], out)[0]
