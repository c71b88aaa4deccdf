"""The results as a Markdown table, and the issue's targets evaluated on them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Getter = Callable[[dict[str, Any]], Any]

CONTENDER_ROWS = (
    ("floor", "floor: raw sqlite3, minimal schema"),
    ("sqlite3_ledger_schema", "raw sqlite3, ledger's tables + statements"),
    ("sqlite3_ledger_schema_journal", "same, journaled, written every 128 calls"),
    ("ledger", "**llm_ledger send_message**"),
    ("ledger_dict", "llm_ledger send_message, API answer as dict"),
    ("ledger_sync", "llm_ledger send_message, writes=sync"),
    ("langchain", "LangChain SQLiteCache"),
    ("diskcache", "diskcache"),
    ("pickle", "seed's pickle file"),
)


def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, (int, float)):
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.2f}"
    return str(v)


def _ratio(a: Any, b: Any) -> float | None:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
        return round(a / b, 2)
    return None


def _at(*path: str) -> Getter:
    return lambda s: _get(s, *path)


def rows(results: dict[str, Any]) -> list[tuple[str, Getter, Getter | None]]:
    """(label, value getter, floor getter for the ×floor column or None)."""
    out: list[tuple[str, Getter, Getter | None]] = []
    for kind in ("hit", "store"):
        for name, label in CONTENDER_ROWS:
            out.append(
                (f"{kind} µs/call: {label}", _at(f"{kind}_us", name), _at(f"{kind}_us", "floor"))
            )
    out += [
        (
            "calls/s, 4 procs x 4 threads, 80% hits: llm_ledger",
            lambda s: _get(s, "concurrency", "ledger", "calls_per_s"),
            lambda s: _get(s, "concurrency", "floor", "calls_per_s"),
        ),
        ("calls/s, same: floor", lambda s: _get(s, "concurrency", "floor", "calls_per_s"), None),
        ("loopback µs: raw SDK call to test-kit server", lambda s: _get(s, "loopback", "raw_sdk_us"), None),
        ("loopback µs: send_message miss, same server", lambda s: _get(s, "loopback", "ledger_miss_us"), None),
        ("loopback: ledger overhead %", lambda s: _get(s, "loopback", "overhead_pct"), None),
        ("loopback µs, server with TCP_NODELAY: raw SDK", lambda s: _get(s, "loopback_nodelay", "raw_sdk_us"), None),
        ("loopback µs, server with TCP_NODELAY: send_message", lambda s: _get(s, "loopback_nodelay", "ledger_miss_us"), None),
        ("loopback, TCP_NODELAY: ledger overhead %", lambda s: _get(s, "loopback_nodelay", "overhead_pct"), None),
        ("cost report over all calls, s", lambda s: _get(s, "report", "seconds"), None),
        ("export rows/s", lambda s: _get(s, "export", "rows_per_s"), None),
        ("copy rows/s", lambda s: _get(s, "copy", "rows_per_s"), None),
        ("peak RSS MB: process doing hits + stores", lambda s: _get(s, "memory", "calls", "peak_rss_mb"), None),
        ("peak RSS MB: process running the cost report", lambda s: _get(s, "report", "peak_rss_mb"), None),
        ("peak RSS MB: export / copy", lambda s: _pair(_get(s, "export", "peak_rss_mb"), _get(s, "copy", "peak_rss_mb")), None),
        ("seeding s: ledger (bulk executemany, 4 tables)", lambda s: _get(s, "seed_s", "ledger"), None),
        ("seeding s: floor", lambda s: _get(s, "seed_s", "floor"), None),
    ]  # fmt: skip
    return out


def _pair(a: Any, b: Any) -> Any:
    if a is None and b is None:
        return None
    return f"{_fmt(a)} / {_fmt(b)}"


def table(results: dict[str, Any]) -> str:
    sizes = list(results["sizes"])
    head = ["measurement (median)"]
    for s in sizes:
        head += [f"{int(s):,}", "×floor"]
    if len(sizes) > 1:
        head.append(f"{_short(sizes[-1])}/{_short(sizes[0])}")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, get, floor in rows(results):
        vals = [get(results["sizes"][s]) for s in sizes]
        if all(v is None for v in vals):
            continue
        cells = [label]
        for s, v in zip(sizes, vals, strict=True):
            f = floor(results["sizes"][s]) if floor else None
            r = _ratio(v, f) if floor and not isinstance(v, str) else None
            cells += [_fmt(v), _fmt(r) if r is not None else ""]
        if len(sizes) > 1:
            growth = _ratio(vals[-1], vals[0]) if not isinstance(vals[0], str) else None
            cells.append(_fmt(growth) if growth is not None else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _short(size: str) -> str:
    n = int(size)
    for unit, div in (("M", 1_000_000), ("k", 1_000)):
        if n >= div and n % div == 0:
            return f"{n // div}{unit}"
    return str(n)


# --- targets ----------------------------------------------------------------------------


def _target(name: str, value: Any, op: str, limit: float, note: str = "") -> dict[str, Any]:
    met = None
    if isinstance(value, (int, float)):
        met = value <= limit if op == "<=" else value >= limit
    return {"target": name, "value": value, "op": op, "limit": limit, "met": met, "note": note}


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    sizes = list(results["sizes"])
    S = results["sizes"]
    out = []
    for s in sizes:
        r = S[s]
        n = f"{int(s):,}"
        out += [
            _target(f"hit <= 2x floor ({n})", _ratio(_get(r, "hit_us", "ledger"), _get(r, "hit_us", "floor")), "<=", 2),
            _target(f"store <= 2.5x floor ({n})", _ratio(_get(r, "store_us", "ledger"), _get(r, "store_us", "floor")), "<=", 2.5),
            _target(f">= 5x faster than LangChain on hits ({n})", _ratio(_get(r, "hit_us", "langchain"), _get(r, "hit_us", "ledger")), ">=", 5),
            _target(f">= 10x faster than LangChain on stores ({n})", _ratio(_get(r, "store_us", "langchain"), _get(r, "store_us", "ledger")), ">=", 10),
            _target(f"calls/s, 4 procs x 4 threads >= 0.6x floor ({n})", _ratio(_get(r, "concurrency", "ledger", "calls_per_s"), _get(r, "concurrency", "floor", "calls_per_s")), ">=", 0.6),
        ]  # fmt: skip
    if len(sizes) > 1:
        lo, hi = S[sizes[0]], S[sizes[-1]]
        span = f"({_short(sizes[-1])}/{_short(sizes[0])})"
        out += [
            _target(f"hit flat {span}", _ratio(_get(hi, "hit_us", "ledger"), _get(lo, "hit_us", "ledger")), "<=", 1.3),
            _target(f"store flat {span}", _ratio(_get(hi, "store_us", "ledger"), _get(lo, "store_us", "ledger")), "<=", 1.3),
            _target(f"memory flat: peak RSS of calls {span}", _ratio(_get(hi, "memory", "calls", "peak_rss_mb"), _get(lo, "memory", "calls", "peak_rss_mb")), "<=", 1.1),
            _target(f"memory flat: peak RSS of cost report {span}", _ratio(_get(hi, "report", "peak_rss_mb"), _get(lo, "report", "peak_rss_mb")), "<=", 1.1),
            _target(f"memory flat: peak RSS of export {span}", _ratio(_get(hi, "export", "peak_rss_mb"), _get(lo, "export", "peak_rss_mb")), "<=", 1.1),
            _target(f"memory flat: peak RSS of copy {span}", _ratio(_get(hi, "copy", "peak_rss_mb"), _get(lo, "copy", "peak_rss_mb")), "<=", 1.1),
        ]  # fmt: skip
    big = S[sizes[-1]]
    n = f"{int(sizes[-1]):,} calls"
    shipped = _get(big, "loopback", "overhead_pct")
    raw_ms = (_get(big, "loopback", "raw_sdk_us") or 0) / 1000
    note = f"with the server as shipped: {_fmt(shipped)}%"
    if raw_ms > 10:
        note += f", against its {raw_ms:.0f} ms answers (Nagle + delayed ACK)"
    out += [
        _target(
            "ledger overhead on a miss <= 10% of a loopback call (server with TCP_NODELAY)",
            _get(big, "loopback_nodelay", "overhead_pct"),
            "<=",
            10,
            note,
        ),
        _target(
            f"cost report over {n} <= 2 s",
            _get(big, "report", "seconds"),
            "<=",
            2,
            _get(big, "report", "source") or "",
        ),
        _target(
            f"copy >= 20,000 rows/s ({n})",
            _get(big, "copy", "rows_per_s"),
            ">=",
            20_000,
            _get(big, "copy", "skipped") or "",
        ),
    ]
    return out


def postgres_table(pgr: dict[str, Any]) -> str:
    n = f"{pgr['size']:,}"
    lines = [
        f"| PostgreSQL, 8 procs x 4 threads, 80% hits, {n} entries | calls/s | ×floor | every call a row |",
        "|---|---|---|---|",
    ]
    for kind, label in (("ledger", "**llm_ledger send_message**"), ("floor", "floor: raw psycopg")):
        r = pgr[kind]
        ratio = _fmt(pgr["ratio"]) if kind == "ledger" else "1.00"
        lines.append(
            f"| {label} | {_fmt(r['calls_per_s'])} | {ratio} | {_fmt(r['audit_rows_ok'])} |"
        )
    return "\n".join(lines)


def postgres_targets(pgr: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not pgr:
        return []
    rows_ok = pgr["ledger"]["audit_rows_ok"] and pgr["floor"]["audit_rows_ok"]
    note = "" if rows_ok else "an audit row was missing: the figure does not count"
    return [
        _target("PostgreSQL 8x4 calls/s >= 0.5x the psycopg floor", pgr["ratio"] if rows_ok else None, ">=", 0.5, note),
    ]  # fmt: skip


def coldstart_targets(cold: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not cold:
        return []
    return [
        _target("llm-ledger --help <= 0.4 s", cold["cli_help_ms"] / 1000, "<=", 0.4),
        _target("import llm_ledger <= 1.2x import openai", cold["import_ratio_to_openai"], "<=", 1.2),
        _target("first token count in a fresh process <= 100 ms", cold["first_count_ms"], "<=", 100),
        _target("first call to the test-kit server <= 1.5x a warm call", cold["first_chat_ratio"], "<=", 1.5),
        _target("the same after client.prepare() (not the target's own terms)", cold.get("first_chat_prepared_ratio"), "<=", 1.5),
        _target("the same after client.prepare(connect=True) (not the target's own terms)", cold.get("first_chat_prepared_connect_ratio"), "<=", 1.5),
    ]  # fmt: skip


def targets_table(ts: list[dict[str, Any]]) -> str:
    lines = ["| target | value | met |", "|---|---|---|"]
    for t in ts:
        met = {True: "met", False: "**missed**", None: "not measured"}[t["met"]]
        note = f" ({t['note']})" if t["note"] else ""
        lines.append(f"| {t['target']} | {_fmt(t['value'])} | {met}{note} |")
    return "\n".join(lines)
