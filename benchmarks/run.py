"""The benchmark: ``python -m benchmarks.run [--quick] [--sizes 10k,1M] [--out FILE]``.

One run, one command, one workload: llm_ledger's ``send_message`` (hit and store),
the raw-sqlite3 floor, LangChain's SQLiteCache, diskcache and the seed's pickle file,
at each ledger size; then throughput with 4 processes x 4 threads, the overhead on a
miss next to a loopback API call, the cost report, export and copy, and peak memory.
Prints a Markdown table of medians with ratios to the floor, and writes the same
figures as JSON (and the table as .md beside it). See docs/benchmarks.md.

Timing never fails anything here; what does fail the run is a measurement that is not
what it claims (a "hit" that called the API, a call missing from the audit log).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from . import bulk, coldstart, concurrency, contenders, latency, loopback, pg, report, workload

OPTIONAL = ("langchain", "diskcache")
SKIPPABLE = (
    "sqlite3_ledger_schema",
    "sqlite3_ledger_schema_journal",
    "ledger_dict",
    "ledger_sync",
    "langchain",
    "diskcache",
    "pickle",
    "concurrency",
    "loopback",
    "coldstart",
    "postgres",
    "report",
    "export",
    "copy",
    "memory",
)


def parse_size(text: str) -> int:
    text = text.strip().lower().replace("_", "").replace(",", "")
    mult = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text[:-1] if mult > 1 else text) * mult)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--quick", action="store_true", help="few, small repeats (smoke test: seconds)")
    ap.add_argument(
        "--sizes", help="ledger sizes, e.g. 10000,1000000 or 10k,1M (default: 10k,1M; quick: 200)"
    )
    ap.add_argument("--repeats", type=int, help="timed repeats per figure (default 5; quick 3)")
    ap.add_argument(
        "--ops", type=int, help="hits per repeat (default 1000; quick 30); stores are half"
    )
    ap.add_argument(
        "--out", help="JSON output (default benchmarks/results/latest.json; quick: quick.json)"
    )
    ap.add_argument(
        "--workdir",
        help="where the seeded stores live; kept and reused if given (default: a temp dir, removed)",
    )
    ap.add_argument(
        "--pg-url",
        default=None,
        help=f"PostgreSQL database for the 8x4 row (default: ${pg.ENV}); its tables are DROPPED",
    )
    ap.add_argument(
        "--skip", default="", help=f"comma list of parts to leave out: {', '.join(SKIPPABLE)}"
    )
    args = ap.parse_args(argv)
    args.sizes = [
        parse_size(s) for s in (args.sizes or ("200" if args.quick else "10k,1M")).split(",")
    ]
    args.repeats = args.repeats or (3 if args.quick else 5)
    args.ops = args.ops or (30 if args.quick else 1000)
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = args.skip - set(SKIPPABLE)
    if unknown:
        ap.error(
            f"--skip: unknown part(s) {', '.join(sorted(unknown))}; valid: {', '.join(SKIPPABLE)}"
        )
    default_out = "quick.json" if args.quick else "latest.json"
    args.out = Path(args.out or Path(__file__).parent / "results" / default_out)
    return args


def plan(args: argparse.Namespace) -> dict[str, Any]:
    """How much work each part does, from --quick / --ops."""
    q = args.quick
    return {
        "hit_ops": args.ops,
        "store_ops": max(args.ops // 2, 5),
        "pickle_store_ops": 4 if q else 20,
        "rounds": 2 if q else 10,
        "concurrency": {"processes": 4, "threads": 4, "ops": 10 if q else 250, "hit_ratio": 0.8},
        "loopback_ops": 5 if q else 100,
        "report_repeats": 2 if q else 5,
        "memory": {"hits": 50 if q else 2000, "stores": 20 if q else 500},
        "coldstart_runs": 1 if q else 10,
        "postgres": {
            "size": 200 if q else 10_000,
            "ops": 5 if q else 100,
            "repeats": 1 if q else 3,
        },
    }


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu
            )
    except OSError:
        pass
    mem_gb = None
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": mem_gb,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "git_commit": commit,
        "versions": {
            d: _version(d)
            for d in (
                "llm-ledger",
                "sqlalchemy",
                "openai",
                "pydantic",
                "langchain-community",
                "diskcache",
            )
        },
    }


def _store_files(c: contenders.Contender) -> list[Path]:
    directory = getattr(c, "dir", None)
    if directory is not None:
        return sorted(p for p in Path(directory).rglob("*") if p.is_file())
    db = getattr(c, "db", None)
    if db is None:
        return []
    return [p for p in (db, db.with_name(db.name + "-wal")) if p.exists()]


def prewarm(groups: dict[int, list[contenders.Contender]]) -> int:
    """Read every store once, so that no contender is timed against a cold file: at 1M the
    stores (~13 GB) fit this machine's page cache, but whichever was seeded last would
    otherwise be the only warm one. Returns the bytes read."""
    total = 0
    seen: set[Path] = set()
    for cs in groups.values():
        for c in cs:
            for path in _store_files(c):
                if path in seen:
                    continue
                seen.add(path)
                with open(path, "rb", buffering=0) as fh:
                    while chunk := fh.read(16 << 20):
                        total += len(chunk)
    return total


def available(
    args: argparse.Namespace, skipped: dict[str, str]
) -> list[type[contenders.Contender]]:
    kinds: list[type[contenders.Contender]] = [contenders.Floor, contenders.Ledger]
    if "sqlite3_ledger_schema" not in args.skip:
        kinds.append(contenders.LedgerSchemaFloor)
    if "sqlite3_ledger_schema_journal" not in args.skip:
        kinds.append(contenders.LedgerSchemaJournalFloor)
    if "ledger_dict" not in args.skip:
        kinds.append(contenders.LedgerDictAnswers)
    if "ledger_sync" not in args.skip:
        kinds.append(contenders.LedgerSyncWrites)
    checks = {
        "langchain": contenders.langchain_installed,
        "diskcache": contenders.diskcache_installed,
    }
    classes = {"langchain": contenders.LangChain, "diskcache": contenders.DiskCache}
    for name in OPTIONAL:
        if name in args.skip:
            skipped[name] = "left out (--skip)"
        elif not checks[name]():
            skipped[name] = "not installed: pip install 'llm-ledger[bench]'"
        else:
            kinds.append(classes[name])
    if "pickle" in args.skip:
        skipped["pickle"] = "left out (--skip)"
    else:
        kinds.append(contenders.PickleFile)
    return kinds


def open_contenders(
    args: argparse.Namespace, workdir: Path, size: int, out: dict[str, Any], skipped: dict[str, str]
) -> list[contenders.Contender]:
    """Every contender at ``size``, seeded (or reused from --workdir) and open."""
    cs: list[contenders.Contender] = []
    for kind in available(args, skipped):
        if kind.max_size is not None and size > kind.max_size:
            out["notes"].append(
                f"{kind.name}: measured up to {kind.max_size:,} entries only "
                "(each store rewrites the whole file)"
            )
            continue
        c = kind(workdir, size)
        log(f"{size:,}: seeding {c.name}")
        t0 = time.perf_counter()
        fresh = c.seed()
        if fresh:
            out["seed_s"][c.name] = round(time.perf_counter() - t0, 2)
        c.open()
        cs.append(c)
    return cs


def latency_figures(runs: dict[str, dict[str, list[float]]], out: dict[str, Any]) -> None:
    out["hit_us"] = latency.medians(runs["hit_us"])
    out["store_us"] = latency.medians(runs["store_us"])
    out["min_us"] = {k: {n: round(min(v), 2) for n, v in r.items()} for k, r in runs.items()}
    out["runs_us"] = {
        k: {n: [round(x, 2) for x in v] for n, v in r.items()} for k, r in runs.items()
    }
    out["ratio_to_floor"] = {
        k: {n: round(v / out[f"{k}_us"]["floor"], 2) for n, v in out[f"{k}_us"].items()}
        for k in ("hit", "store")
    }


def whole_ledger_parts(
    args: argparse.Namespace,
    p: dict[str, Any],
    workdir: Path,
    size: int,
    out: dict[str, Any],
    skipped: dict[str, str],
) -> None:
    """Throughput, loopback overhead, report, export, copy and memory at one size."""
    db = workdir / f"ledger-{size}.db"
    if "concurrency" not in args.skip:
        out["concurrency"] = {}
        for kind in ("ledger", "floor"):
            log(f"{size:,}: concurrency, {kind}")
            out["concurrency"][kind] = concurrency.measure(kind, workdir, size, **p["concurrency"])
    if "loopback" not in args.skip:
        for key, nodelay in (("loopback", False), ("loopback_nodelay", True)):
            log(f"{size:,}: {key}")
            out[key] = loopback.measure(
                db, repeats=args.repeats, ops=p["loopback_ops"], nodelay=nodelay
            )
    if "report" not in args.skip:
        log(f"{size:,}: cost report")
        out["report"] = bulk.report(db, p["report_repeats"])
        if not out["report"]["library"]:
            out["notes"].append("report: " + out["report"]["source"])
    for kind in ("export", "copy"):
        if kind not in args.skip:
            log(f"{size:,}: {kind}")
            out[kind] = bulk.transfer(kind, db)
            if "skipped" in out[kind]:
                skipped[kind] = out[kind]["skipped"]
    if "memory" not in args.skip:
        log(f"{size:,}: memory")
        out["memory"] = {
            "calls": bulk.memory(db, size, **p["memory"]),
            "main_rss_mb": bulk.rss_mb(),
        }


def run_all(
    args: argparse.Namespace, p: dict[str, Any], workdir: Path, results: dict[str, Any]
) -> None:
    sizes: dict[int, dict[str, Any]] = {size: {"seed_s": {}, "notes": []} for size in args.sizes}
    groups: dict[int, list[contenders.Contender]] = {}
    try:
        for size in args.sizes:
            groups[size] = open_contenders(args, workdir, size, sizes[size], results["skipped"])
        warmed = prewarm(groups)
        log(f"read {warmed / 2**30:.1f} GiB of stores into the page cache")
        log(
            f"timing hits and stores at {', '.join(f'{s:,}' for s in args.sizes)}: {args.repeats} "
            f"repeats x {p['hit_ops']} hits / {p['store_ops']} stores, in {p['rounds']} rounds"
        )
        runs = latency.measure(
            groups,
            repeats=args.repeats,
            rounds=p["rounds"],
            hit_ops=p["hit_ops"],
            store_ops_of=lambda c: p["pickle_store_ops"] if c.name == "pickle" else p["store_ops"],
        )
    finally:
        for cs in groups.values():
            for c in cs:
                c.close()
    for size in args.sizes:
        latency_figures(runs[size], sizes[size])
    for size in args.sizes:
        whole_ledger_parts(args, p, workdir, size, sizes[size], results["skipped"])
        results["sizes"][str(size)] = sizes[size]


def postgres_part(args: argparse.Namespace, p: dict[str, Any], results: dict[str, Any]) -> None:
    url = pg.url_from(args.pg_url)
    if url is None:
        results["skipped"]["postgres"] = f"no database: pass --pg-url or set {pg.ENV}"
        return
    q = p["postgres"]
    log(f"postgres: seeding {q['size']:,} entries, then 8 procs x 4 threads, ledger and floor")
    results["postgres"] = pg.run_part(url, q["size"], ops=q["ops"], repeats=q["repeats"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    p = plan(args)
    from llm_ledger import config

    config.reset_settings({})  # the harness measures the defaults, not this shell's LLM_LEDGER_*
    started = time.time()
    results: dict[str, Any] = {
        "meta": {
            "command": "python -m benchmarks.run "
            + " ".join(argv if argv is not None else sys.argv[1:]),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "quick": args.quick,
            "sizes": args.sizes,
            "repeats": args.repeats,
            "plan": p,
            "workload": workload.sizes_of_one(),
            "machine": machine(),
            "load_avg_start": os.getloadavg(),
        },
        "sizes": {},
        "skipped": {},
    }
    keep = args.workdir is not None
    workdir = Path(args.workdir) if keep else Path(tempfile.mkdtemp(prefix="llm_ledger_bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        if "coldstart" not in args.skip:
            log("cold start: fresh processes")
            results["coldstart"] = coldstart.measure(p["coldstart_runs"])
        if "postgres" not in args.skip:
            postgres_part(args, p, results)
        run_all(args, p, workdir, results)
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    results["meta"]["load_avg_end"] = os.getloadavg()
    results["meta"]["duration_s"] = round(time.time() - started, 1)
    results["targets"] = (
        report.targets(results)
        + report.postgres_targets(results.get("postgres"))
        + report.coldstart_targets(results.get("coldstart"))
    )
    parts = [report.table(results)]
    if "postgres" in results:
        parts.append(report.postgres_table(results["postgres"]))
    if "coldstart" in results:
        parts.append(coldstart.rows(results["coldstart"]))
    text = "\n\n".join([*parts, report.targets_table(results["targets"])])
    notes = sorted({n for s in results["sizes"].values() for n in s["notes"]})
    notes += [f"{k}: {v}" for k, v in results["skipped"].items()]
    if notes:
        text += "\n\nNotes:\n" + "\n".join(f"- {n}" for n in notes)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(text + "\n")
    print(text)
    log(f"wrote {args.out} and {args.out.with_suffix('.md')} in {results['meta']['duration_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
