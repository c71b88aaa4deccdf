"""Whole-ledger operations and memory, each in a fresh process.

Peak RSS is a high-water mark: in the process that seeded a million rows and ran
every contender it would say nothing about the operation at hand. So the cost
report, export, copy and a plain run of calls each run in their own spawned
process, which reports its time and its peak RSS (``ru_maxrss``).

The report, export and copy are the library's own (``llm_ledger.reports.costs``,
``llm_ledger.transfer.export_bundle`` / ``copy_ledger``) when this checkout has them;
otherwise the report is timed as the equivalent SQL GROUP BY (and says so) and
export/copy are skipped with a note.
"""

from __future__ import annotations

import importlib
import inspect
import os
import resource
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from . import seed, workload
from .children import in_child

TRANSFER_TABLES = ("requests", "responses", "cache_entries", "call_log", "call_tags")
EQUIVALENT_REPORT = (
    "SELECT model, COUNT(*) AS calls, "
    "SUM(CASE WHEN cache_status = 'hit' THEN 1 ELSE 0 END) AS hits, "
    "SUM(prompt_tokens) AS prompt_tokens, SUM(completion_tokens) AS completion_tokens, "
    "SUM(cost_usd) AS cost_usd, SUM(saved_usd) AS saved_usd "
    "FROM call_log GROUP BY model ORDER BY model"
)


class Skip(Exception):
    """The library function is absent or takes arguments this harness cannot supply."""


def rss_mb() -> float:
    """This process's resident set now."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    try:
        import psutil

        return round(psutil.Process().memory_info().rss / 2**20, 1)
    except ImportError:
        return peak_rss_mb()


def peak_rss_mb() -> float:
    """This process's peak resident set (kilobytes on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 1024), 1)


def library_function(module: str, name: str) -> Callable[..., Any]:
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise Skip(f"{module} is not in this checkout ({exc})") from None
    fn = getattr(mod, name, None)
    if not callable(fn):
        raise Skip(f"{module}.{name} does not exist in this checkout")
    return fn


def _source_arg(param: inspect.Parameter, db: Path) -> Any:
    """What to pass where the function wants its source ledger: a Ledger, an engine, or a path."""
    hint = f"{param.name} {param.annotation}".lower()
    if "engine" in hint:
        from llm_ledger.store.repository import open_ledger

        return open_ledger(str(db)).engine
    if "ledger" in hint and "str" not in hint and "url" not in hint and "path" not in hint:
        from llm_ledger.store.repository import open_ledger

        return open_ledger(str(db))
    return str(db)


def invoke(fn: Callable[..., Any], db: Path, *rest: Any) -> Any:
    """Call ``fn(source, *rest)`` whatever form of source it wants; anything lazy is drained."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        params = []
    required = [
        p
        for p in params
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(required) != 1 + len(rest):
        raise Skip(
            f"{fn.__module__}.{fn.__name__}{inspect.signature(fn)}: cannot tell what to pass"
        )
    result = fn(_source_arg(required[0], db), *rest)
    if isinstance(result, Iterable) and not isinstance(result, (str, bytes, dict, list, tuple)):
        result = list(result)
    return result


def table_rows(db: Path, tables: Iterable[str] = TRANSFER_TABLES) -> dict[str, int]:
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        present = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in tables
            if t in present
        }
    finally:
        conn.close()


# --- what the children do ---------------------------------------------------------------


def _report(db: str, repeats: int) -> dict[str, Any]:
    from sqlalchemy import text

    from llm_ledger.store.repository import open_ledger

    try:
        fn = library_function("llm_ledger.reports", "costs")
        source = "llm_ledger.reports.costs"

        def run() -> Any:
            return invoke(fn, Path(db))
    except Skip as skip:
        source = f"equivalent SQL GROUP BY over call_log ({skip})"
        engine = open_ledger(db).engine

        def run() -> Any:
            with engine.connect() as conn:
                return conn.execute(text(EQUIVALENT_REPORT)).all()

    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return {
        "seconds": round(statistics.median(times), 4),
        "runs_s": [round(t, 4) for t in times],
        "source": source,
        "library": source == "llm_ledger.reports.costs",
        "peak_rss_mb": peak_rss_mb(),
    }


def _transfer(kind: str, db: str, dest: str) -> dict[str, Any]:
    name = {"export": "export_bundle", "copy": "copy_ledger"}[kind]
    try:
        fn = library_function("llm_ledger.transfer", name)
    except Skip as skip:
        return {"skipped": str(skip)}
    rows = table_rows(Path(db))
    t0 = time.perf_counter()
    try:
        invoke(fn, Path(db), dest)
    except Skip as skip:
        return {"skipped": str(skip)}
    seconds = time.perf_counter() - t0
    total = sum(rows.values())
    return {
        "seconds": round(seconds, 3),
        "rows": total,
        "rows_per_s": round(total / seconds, 1),
        "calls_per_s": round(rows.get("call_log", 0) / seconds, 1),
        "source": f"llm_ledger.transfer.{name}",
        "peak_rss_mb": peak_rss_mb(),
    }


def _calls(db: str, size: int, hits: int, stores: int) -> dict[str, Any]:
    import random

    from llm_ledger import config

    from .contenders import Ledger

    config.reset_settings({})
    c = Ledger(Path(db).parent, size)
    c.open()
    opened = rss_mb()
    rng = random.Random(1)
    todo = [rng.randrange(size) for _ in range(hits)] + list(
        range(800_000_000, 800_000_000 + stores)
    )
    for i in todo:
        c.call(*c.prepare(workload.item(i)))
    c.close()
    return {
        "rss_after_open_mb": opened,
        "rss_after_calls_mb": rss_mb(),
        "peak_rss_mb": peak_rss_mb(),
    }


# --- what the harness calls --------------------------------------------------------------


def report(db: Path, repeats: int) -> dict[str, Any]:
    return in_child(_report, str(db), repeats)


def transfer(kind: str, db: Path) -> dict[str, Any]:
    dest = db.with_name(f"{kind}-of-{db.stem}" + (".db" if kind == "copy" else ".bundle"))
    try:
        return in_child(_transfer, kind, str(db), str(dest))
    finally:
        if dest.is_dir():
            shutil.rmtree(dest, ignore_errors=True)
        for extra in ("", "-wal", "-shm", ".spool.jsonl"):
            with_extra = Path(str(dest) + extra)
            if with_extra.is_file():
                os.unlink(with_extra)


def memory(db: Path, size: int, hits: int, stores: int) -> dict[str, Any]:
    mark = seed.marks(db, seed.LEDGER_TABLES)
    try:
        return in_child(_calls, str(db), size, hits, stores)
    finally:
        seed.trim(db, mark)
