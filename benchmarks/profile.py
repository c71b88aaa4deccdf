"""Where a hit and a store spend their time: ``python -m benchmarks.profile``.

Profiles ``send_message`` on the benchmark's workload and stub API (seeded ledger of
``--size`` entries), hits or stores, with cProfile (always there) or pyinstrument (if
installed). Writes the report under benchmarks/results/ and prints its top. To watch a
long run from outside instead: ``py-spy record -o out.svg -- python -m benchmarks.profile
--ops 20000``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import random
import shutil
import tempfile
from pathlib import Path

from . import latency, workload
from .contenders import Ledger
from .run import parse_size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.profile", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--size", default="10k", help="ledger size (default 10k)")
    ap.add_argument("--path", choices=("hit", "store"), default="hit")
    ap.add_argument("--ops", type=int, default=3000)
    ap.add_argument("--tool", choices=("cprofile", "pyinstrument"), default="cprofile")
    ap.add_argument("--workdir", help="seeded stores to reuse (as for benchmarks.run)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    size = parse_size(args.size)
    from llm_ledger import config

    config.reset_settings({})
    workdir = (
        Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="llm_ledger_prof-"))
    )
    workdir.mkdir(parents=True, exist_ok=True)
    c = Ledger(workdir, size)
    c.seed()
    c.open()
    rng = random.Random(3)
    if args.path == "hit":
        items = [rng.randrange(size) for _ in range(args.ops)]
    else:
        items = list(range(latency.FRESH, latency.FRESH + args.ops))
    calls = [c.prepare(workload.item(i)) for i in items]
    warm = [c.prepare(workload.item(i)) for i in range(min(size, 200))]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"profile-{args.path}-{size}"
    try:
        with c.restoring():
            latency.time_batch(c.call, warm)
            latency.settle()
            if args.tool == "pyinstrument":
                from pyinstrument import Profiler

                prof = Profiler(interval=0.0001)
                prof.start()
                us = latency.time_batch(c.call, calls)
                prof.stop()
                text = prof.output_text(unicode=True, color=False, show_all=False)
                stem.with_suffix(".html").write_text(prof.output_html())
            else:
                pr = cProfile.Profile()
                pr.enable()
                us = latency.time_batch(c.call, calls)
                pr.disable()
                pr.dump_stats(stem.with_suffix(".prof"))
                buf = io.StringIO()
                stats = pstats.Stats(pr, stream=buf).strip_dirs()
                stats.sort_stats("cumulative").print_stats(45)
                stats.sort_stats("tottime").print_stats(30)
                text = buf.getvalue()
    finally:
        c.close()
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    header = (
        f"{args.path}s at {size:,} entries, {args.ops} calls, {us:.1f} us/call under {args.tool}\n"
    )
    stem.with_suffix(".txt").write_text(header + text)
    print(header + text[:6000])
    print(f"full report: {stem.with_suffix('.txt')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
