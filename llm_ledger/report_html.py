"""``llm-ledger report --html``: one self-contained HTML file with charts of where the money went.

The figures are the ones ``costs`` and ``stats`` print (llm_ledger.reports, with the same
filters), plus the ten slowest and ten most expensive calls. The page needs no network: the
charting library's JavaScript (plotly.js, from the installed ``plotly`` package, the
``report`` extra) is written into the file, and so is the data. plotly is only read as a
file, never imported: building a report costs the queries and one file write.
"""

from __future__ import annotations

import contextlib
import html
import importlib.util
import json
import os
import tempfile
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from . import reports, search
from ._version import __version__
from .errors import ConfigError
from .filters import CallFilter
from .log import logger as _LOG
from .store import db
from .store.models import CallLog
from .store.repository import Ledger

__all__ = ["CHARTS", "build_report", "plotly_js", "write_report"]

_LOG_T = CallLog.__table__
TOP = 10  # rows in each table of calls
TOP_GROUPS = 20  # bars in the by-model and by-run charts
CHARTS = ("spend", "calls", "models", "runs", "latency")
_TABLE_COLUMNS = (
    "id",
    "created_at",
    "model",
    "run",
    "cache_status",
    "status",
    "latency_ms",
    "cost_usd",
    "prompt",
)


def plotly_js() -> str:
    """plotly.js as shipped inside the installed ``plotly`` package (read, not imported)."""
    spec = importlib.util.find_spec("plotly")
    origin = spec.origin if spec is not None else None
    path = Path(origin).parent / "package_data" / "plotly.min.js" if origin else None
    if path is None or not path.is_file():
        raise ConfigError(
            "the HTML report embeds plotly.js from the plotly package, which is not "
            "installed: pip install 'llm-ledger[report]' (or pip install plotly)"
        )
    return path.read_text(encoding="utf-8")


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


def _top_calls(ledger: Ledger, filters: CallFilter, order: Any, extra: list[Any]) -> list[dict]:
    where = [*filters.conditions(), *extra]
    with ledger.engine.connect() as conn:
        return search.call_rows(conn, _TABLE_COLUMNS, where, [order, _LOG_T.c.id.desc()], TOP)


def build_report(ledger: Ledger, filters: CallFilter | None = None) -> dict[str, Any]:
    """The report's data: the charts' series and the two tables (plain JSON types)."""
    filters = filters or CallFilter()
    days = sorted(reports.costs(ledger, "day", filters=filters), key=lambda r: r["group"])
    models = reports.costs(ledger, "model", filters=filters)[:TOP_GROUPS]
    runs = [r for r in reports.costs(ledger, "run", filters=filters) if r["group"]][:TOP_GROUPS]
    stats = reports.stats(ledger, filters=filters)
    c = _LOG_T.c
    slowest = _top_calls(
        ledger, filters, c.latency_ms.desc(), [c.latency_ms.is_not(None), c.cache_status != "hit"]
    )
    priciest = _top_calls(
        ledger, filters, c.cost_usd.desc(), [c.cost_usd.is_not(None), c.cost_usd > 0]
    )
    calls = sum(r["calls"] for r in days)
    hits = sum(r["hits"] for r in days)
    return {
        "title": "llm_ledger report",
        "where": db_where(ledger),
        "filter": filters.describe(),
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "version": __version__,
        "totals": {
            "calls": calls,
            "hits": hits,
            "hit_rate": round(hits / calls, 4) if calls else None,
            "cost_usd": _num(sum((r["cost_usd"] for r in days), Decimal(0))),
            "saved_usd": _num(sum((r["saved_usd"] for r in days), Decimal(0))),
        },
        "days": [
            {
                "day": r["group"],
                "calls": r["calls"],
                "hits": r["hits"],
                "hit_rate": round(r["hits"] / r["calls"], 4) if r["calls"] else 0,
                "cost_usd": _num(r["cost_usd"]),
                "saved_usd": _num(r["saved_usd"]),
            }
            for r in days
        ],
        "models": [{"model": r["group"], "cost_usd": _num(r["cost_usd"])} for r in models],
        "runs": [{"run": r["group"], "cost_usd": _num(r["cost_usd"])} for r in runs],
        "latency": [
            {"model": r["model"], "p50": r["p50_latency_ms"], "p95": r["p95_latency_ms"]}
            for r in stats
            if r["p50_latency_ms"] is not None
        ],
        "slowest": [_plain_row(r) for r in slowest],
        "priciest": [_plain_row(r) for r in priciest],
    }


def db_where(ledger: Ledger) -> str:
    from .store import db

    return db.describe(ledger.url)


def _plain_row(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, Decimal):
            value = float(value)
        elif isinstance(value, datetime):
            value = value.isoformat(sep=" ", timespec="seconds")
        elif key == "prompt" and value:
            value = " ".join(str(value).split())[:120]
        out[key] = value
    return out


def _figures(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """plotly figure specs (data + layout), one per chart of :data:`CHARTS`."""
    days = [d["day"] for d in data["days"]]
    money = {"tickprefix": "$", "tickformat": ",.6~f", "rangemode": "tozero"}
    by_day = {"type": "category"}

    def layout(title: str, **extra: Any) -> dict[str, Any]:
        return {
            "title": {"text": title, "x": 0.01},
            "margin": {"l": 60, "r": 20, "t": 50, "b": 50},
            "height": 340,
            "legend": {"orientation": "h", "y": -0.2},
            **extra,
        }

    def hbar(rows: list[dict], key: str, title: str) -> dict[str, Any]:
        rows = list(reversed(rows))  # largest at the top
        return {
            "data": [
                {
                    "type": "bar",
                    "orientation": "h",
                    "name": "cost",
                    "x": [r["cost_usd"] for r in rows],
                    "y": [r[key] for r in rows],
                    "marker": {"color": "#4c78a8"},
                }
            ],
            "layout": layout(title, xaxis=money, yaxis={"automargin": True}),
        }

    return {
        "spend": {
            "data": [
                {
                    "type": "bar",
                    "name": "spent",
                    "x": days,
                    "y": [d["cost_usd"] for d in data["days"]],
                    "marker": {"color": "#e45756"},
                },
                {
                    "type": "bar",
                    "name": "saved by the cache",
                    "x": days,
                    "y": [d["saved_usd"] for d in data["days"]],
                    "marker": {"color": "#54a24b"},
                },
            ],  # fmt: skip
            "layout": layout(
                "Spend and savings per day (USD)", barmode="group", xaxis=by_day, yaxis=money
            ),
        },
        "calls": {
            "data": [
                {
                    "type": "bar",
                    "name": "calls",
                    "x": days,
                    "y": [d["calls"] for d in data["days"]],
                    "marker": {"color": "#4c78a8"},
                },
                {
                    "type": "scatter",
                    "mode": "lines+markers",
                    "name": "hit rate",
                    "x": days,
                    "y": [d["hit_rate"] for d in data["days"]],
                    "yaxis": "y2",
                    "marker": {"color": "#f58518"},
                },
            ],  # fmt: skip
            "layout": layout(
                "Calls and cache hit rate per day",
                xaxis=by_day,
                yaxis={"title": {"text": "calls"}, "rangemode": "tozero"},
                yaxis2={"overlaying": "y", "side": "right", "range": [0, 1], "tickformat": ".0%"},
            ),
        },
        "models": hbar(data["models"], "model", "Cost by model (USD)"),
        "runs": hbar(data["runs"], "run", "Cost by run (USD)"),
        "latency": {
            "data": [
                {
                    "type": "bar",
                    "name": "p50",
                    "x": [r["model"] for r in data["latency"]],
                    "y": [r["p50"] for r in data["latency"]],
                    "marker": {"color": "#72b7b2"},
                },
                {
                    "type": "bar",
                    "name": "p95",
                    "x": [r["model"] for r in data["latency"]],
                    "y": [r["p95"] for r in data["latency"]],
                    "marker": {"color": "#b279a2"},
                },
            ],  # fmt: skip
            "layout": layout(
                "Latency per model, answered API calls (ms)",
                barmode="group",
                yaxis={"rangemode": "tozero"},
            ),
        },
    }


_EMPTY_NOTE = {
    "spend": "No calls in this selection.",
    "calls": "No calls in this selection.",
    "models": "No calls in this selection.",
    "runs": "No call in this selection was made in a run (scope(run=...)).",
    "latency": "No answered API calls (hits have no model latency).",
}


def dollars(value: float) -> str:
    """$1,234.5600 for sums people compare; all significant places for fractions of a cent."""
    if abs(value) >= 0.01 or value == 0:
        return f"${value:,.4f}"
    return "$" + f"{value:.10f}".rstrip("0")


def _has_points(figure: dict[str, Any]) -> bool:
    return any(trace.get("x") for trace in figure["data"])


def _table(rows: list[dict[str, Any]], title: str, anchor: str) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in _TABLE_COLUMNS)
    body = []
    for row in rows:
        cells = []
        for c in _TABLE_COLUMNS:
            value = row.get(c)
            if value is None:
                text_value = ""
            elif c == "cost_usd":
                text_value = dollars(value)
            elif c == "latency_ms":
                text_value = f"{value:,.0f}"
            else:
                text_value = str(value)
            cls = ' class="num"' if c in ("id", "latency_ms", "cost_usd") else ""
            cls = ' class="when"' if c == "created_at" else cls
            cells.append(f"<td{cls}>{html.escape(text_value)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    if not body:
        body.append(f'<tr><td colspan="{len(_TABLE_COLUMNS)}">No calls.</td></tr>')
    return (
        f'<section id="{anchor}"><h2>{html.escape(title)}</h2><table>'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></section>"
    )


_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #222; }
h1 { margin-bottom: 0; } .sub { color: #666; margin-top: 4px; }
.totals { display: flex; gap: 32px; margin: 16px 0 8px; }
.totals div { font-size: 13px; color: #666; } .totals b { display: block; font-size: 22px; color: #222; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(520px, 1fr)); gap: 16px; }
.chart { border: 1px solid #ddd; border-radius: 6px; padding: 4px; min-height: 340px; }
.empty { color: #888; padding: 24px; }
table { border-collapse: collapse; font-size: 13px; width: 100%; }
th, td { border-bottom: 1px solid #eee; padding: 4px 8px; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.when { white-space: nowrap; }
"""


def render(data: dict[str, Any], script: str) -> str:
    """The whole page: style, plotly.js, data and the code that draws each chart."""
    figures = _figures(data)
    t = data["totals"]
    hit_rate = "-" if t["hit_rate"] is None else f"{t['hit_rate']:.1%}"
    totals = "".join(
        f"<div>{label}<b>{html.escape(value)}</b></div>"
        for label, value in (
            ("calls", f"{t['calls']:,}"),
            ("cache hit rate", hit_rate),
            ("spent", dollars(t["cost_usd"])),
            ("saved by the cache", dollars(t["saved_usd"])),
        )
    )
    charts = "".join(
        f'<div class="chart" id="chart-{name}" data-chart="{name}"></div>'
        if _has_points(figures[name])
        else f'<div class="chart empty" id="chart-{name}">{html.escape(_EMPTY_NOTE[name])}</div>'
        for name in CHARTS
    )
    drawn = {name: fig for name, fig in figures.items() if _has_points(fig)}
    payload = json.dumps(drawn, separators=(",", ":")).replace("</", "<\\/")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(data["title"])}</title><style>{_STYLE}</style>
<script>{script}</script></head>
<body>
<h1>{html.escape(data["title"])}</h1>
<p class="sub">{html.escape(data["where"])} · {html.escape(data["filter"])} · generated \
{html.escape(data["generated"])} by llm_ledger {html.escape(data["version"])}</p>
<div class="totals">{totals}</div>
<div class="grid">{charts}</div>
{_table(data["slowest"], f"The {TOP} slowest answered API calls", "slowest")}
{_table(data["priciest"], f"The {TOP} most expensive calls", "priciest")}
<script>
const FIGURES = {payload};
for (const [name, fig] of Object.entries(FIGURES)) {{
  Plotly.newPlot("chart-" + name, fig.data, fig.layout,
                 {{displayModeBar: false, responsive: true}});
}}
</script>
</body></html>
"""


def write_report(ledger: Ledger, path: str | Path, filters: CallFilter | None = None) -> Path:
    """Write the report to ``path`` (one file; plotly.js inside); returns the path.

    It holds prompts and answers: like an export it is created ``0600`` and appears
    complete or not at all (a temporary file renamed over ``path``, so a symlink at
    ``path`` is replaced, not followed). The ledger's own files are refused."""
    out = Path(path)
    own = db.own_file(ledger.url, out)
    if own is not None:
        raise ConfigError(
            f"cannot write the report to {out}: it is the ledger {own} or one of its files; "
            "name another file, e.g. report.html"
        )
    if out.is_dir():
        raise ConfigError(f"cannot write the report to {out}: it is a directory")
    script = plotly_js()  # first: a missing plotly fails before any query
    data = build_report(ledger, filters)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with open(fd, "w", encoding="utf-8") as f:
            f.write(render(data, script))
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _LOG.info("ledger.report_written", path=str(out), calls=data["totals"]["calls"])
    return out
