"""Search and HTML report timings on a big SQLite ledger: ``python -m benchmarks.analyst``.

``--calls 1M`` (default) seeds a ledger the way the main benchmark does (benchmarks/seed.py:
one request, answer and audit row per call, spread over 30 days, the answers indexed by the
migration's FTS5 triggers as they are written), then times, as medians of ``--repeats``:

- ``search`` of a word found in one call only (the number in "Question 123456: ..."),
- ``search`` of two words that nearly every call holds (the workload's small vocabulary),
  newest 20, as ``llm-ledger search`` asks,
- ``search`` of the common words restricted to one model and one day (filters),
- ``report --html``: every query of the report and the file write.

Figures go to stdout as a Markdown table (docs/benchmarks.md keeps the last run's).
Timing decides nothing here; a search that finds the wrong calls stops the run.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llm_ledger import report_html, search
from llm_ledger.filters import CallFilter
from llm_ledger.store.repository import Ledger

from . import seed, workload
from .run import parse_size


def _median(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.analyst", description=__doc__)
    ap.add_argument("--calls", default="1M", help="ledger size (default 1M)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dir", help="where to put the ledger (default: a temporary directory)")
    ap.add_argument(
        "--keep",
        metavar="PATH",
        help="seed the ledger at PATH and keep it; a later run with the same PATH and size "
        "measures it again without seeding",
    )
    args = ap.parse_args(argv)
    n = parse_size(args.calls)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(args.keep) if args.keep else Path(tmp) / "ledger.db"
        seeded = None
        if not (args.keep and path.exists() and _calls(path) == n):
            for leftover in path.parent.glob(path.name + "*"):
                leftover.unlink()
            start = time.perf_counter()
            seed.seed_ledger(path, n)
            seeded = time.perf_counter() - start
        ledger = Ledger(str(path))
        try:
            rows = _measure(ledger, n, args.repeats)
        finally:
            ledger.close()
        size_mb = path.stat().st_size / 1e6
    print(f"| measurement ({n:,} calls, SQLite) | median s |")
    print("|---|---|")
    if seeded is not None:
        print(f"| seeding (bulk, FTS5 triggers on) | {seeded:.1f} |")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.3f} |")
    print(f"| ledger file, MB | {size_mb:,.0f} |")


def _calls(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT MAX(id) FROM call_log").fetchone()[0] or 0)


def _measure(ledger: Ledger, n: int, repeats: int) -> list[tuple[str, float]]:
    rare = n // 2 + 1
    out: list[tuple[str, float]] = []
    seconds, found = _median(lambda: search.search_calls(ledger, str(rare)), repeats)
    if [r["prompt"].split(":")[0] for r in found] != [f"Question {rare}"]:
        raise SystemExit(f"search {rare}: expected call {rare}, got {found!r}")
    out.append((f"search, a word in one call ('{rare}')", seconds))
    common = "ledger harvest"
    seconds, found = _median(lambda: search.search_calls(ledger, common, limit=20), repeats)
    if len(found) != 20:
        raise SystemExit(f"search {common!r}: expected 20 calls, got {len(found)}")
    out.append((f"search, two words nearly every call holds ('{common}'), newest 20", seconds))
    day = seed.START.date().isoformat()
    model = workload.model_of(0)
    narrow = CallFilter(since=day, until=day, model=model)
    seconds, found = _median(lambda: search.search_calls(ledger, common, narrow, limit=20), repeats)
    if not found or any(r["model"] != model for r in found):
        raise SystemExit(f"filtered search: unexpected rows {found[:2]!r}")
    out.append((f"search, same words, one model and one day ({model}, {day})", seconds))
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "report.html"
        seconds, _ = _median(lambda: report_html.write_report(ledger, target), max(1, repeats // 2))
    out.append(("report --html, all calls (queries + file)", seconds))
    return out


if __name__ == "__main__":
    main()
