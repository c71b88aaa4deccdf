"""Commands: costs, stats, reprice (see llm_ledger/cli/__init__.py and docs/costs.md).

Thin wrappers over :mod:`llm_ledger.reports`: parse options, open the ledger, print.
"""

from __future__ import annotations

import enum
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Annotated, Any

import typer
from sqlalchemy.engine import Connection

from .. import reports
from ..errors import LedgerError
from ..filters import CallFilter, parse_tags
from ..store import db
from ..store.repository import Ledger
from . import app
from .output import (
    FORMAT_OPTION,
    Cache,
    CacheOpt,
    Format,
    Model,
    Namespace,
    Run,
    Since,
    Status,
    StatusOpt,
    Tags,
    Until,
    emit,
    fail,
    failing,
    wide,
)

# The group of calls without a run / template, named (a blank cell read as missing data).
NO_GROUP = {"run": "(no run)", "template": "(no template)", "model": "(none)", "day": "(none)"}
NOTHING = "no calls match: the ledger holds none in this range (or with these filters)"
USAGE_COLUMNS = ("calls", "hits", "prompt_tokens", "completion_tokens", "cost_usd", "saved_usd")
STATS_COLUMNS = (
    "model",
    "calls",
    "hits",
    "hit_rate",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "saved_usd",
    "p50_latency_ms",
    "p95_latency_ms",
)


class By(str, enum.Enum):
    model = "model"
    day = "day"
    run = "run"
    tag = "tag"
    template = "template"


@contextmanager
def _ledger(location: str) -> Iterator[Ledger]:
    """The ledger at ``location``; a missing SQLite file is an error, not a new empty ledger."""
    path = db.sqlite_path(db.normalize_url(location))
    if path is not None and not path.exists():
        fail(
            f"no ledger at {path}: one is created by the first call, or by "
            f"`llm-ledger --db {shlex.quote(str(path))} migrate`"
        )
    with failing(location):
        ledger = Ledger(location)
        try:
            yield ledger
        finally:
            ledger.close()


@contextmanager
def _reading(location: str) -> Iterator[Connection]:
    """A read-only connection, as ``calls`` and ``sql`` use: a report never migrates the
    ledger or replays its spool (``Ledger(...)`` would, on SQLite)."""
    from .sql import read_only

    with read_only(location) as conn, failing(location):
        yield conn


@app.command()
def costs(
    ctx: typer.Context,
    by: Annotated[By, typer.Option(help="Group by model, day (UTC), run, tag or template.")] = (
        By.model
    ),
    since: Since = None,
    until: Until = None,
    run: Annotated[str | None, typer.Option(help="Only calls made in scope(run=RUN).")] = None,
    model: Annotated[str | None, typer.Option(help="Only calls to this model.")] = None,
    status: StatusOpt = None,
    cache: CacheOpt = None,
    namespace: Namespace = None,
    tag: Tags = None,
    fmt: Format = FORMAT_OPTION,
) -> None:
    """Dollar cost and cache savings, grouped; most expensive first.

    Tokens are the billed ones (hits excluded). A call counts under each of its tags. Paid
    calls that could not be priced are left out of cost_usd and listed on stderr.

    Example: llm-ledger costs --by day --since 2026-05-01 --until 2026-05-31 --format csv
    """
    more = _more_filters(status, cache, namespace, tag)
    with _reading(ctx.obj.db) as conn:
        rows = reports.costs(
            conn,
            by.value,
            since=since,
            until=until,
            run=run,
            model=model,
            with_unpriced=True,
            filters=more,
        )
    for row in rows:
        row[by.value] = row.pop("group")
        if row[by.value] is None and fmt is not Format.json:
            row[by.value] = NO_GROUP.get(by.value, "(none)")  # calls outside any scope(run=)
    emit(
        rows,
        (by.value, *USAGE_COLUMNS),
        fmt,
        title=f"Cost by {by.value}",
        width=wide(),
        empty=NOTHING,
    )
    unpriced = [f"{r[by.value] or '(none)'}: {r['unpriced']}" for r in rows if r["unpriced"]]
    if unpriced:
        rest = f" and {len(unpriced) - 5} more" if len(unpriced) > 5 else ""
        typer.echo(
            f"note: paid calls without a price (cost_usd NULL, left out of the totals), "
            f"by {by.value}: {', '.join(unpriced[:5])}{rest}; map the model with "
            "LLM_LEDGER_MODEL_MAP or LLM_LEDGER_PRICES, then run `llm-ledger reprice`",
            err=True,
        )


@app.command()
def stats(
    ctx: typer.Context,
    since: Since = None,
    until: Until = None,
    run: Run = None,
    model: Model = None,
    status: StatusOpt = None,
    cache: CacheOpt = None,
    namespace: Namespace = None,
    tag: Tags = None,
    chart: Annotated[
        bool, typer.Option("--chart", help="Also draw cost and hit rate per model as bars.")
    ] = False,
    fmt: Format = FORMAT_OPTION,
) -> None:
    """Per model: calls, hit rate, billed tokens, cost, savings, p50/p95 latency (ms).

    Latency percentiles are exact (nearest rank) over answered API calls; hits are excluded.

    Example: llm-ledger stats --since 2026-05-01 --format json
    """
    more = _more_filters(status, cache, namespace, tag, run=run, model=model)
    with _reading(ctx.obj.db) as conn:
        rows = reports.stats(conn, since=since, until=until, filters=more)
    emit(rows, STATS_COLUMNS, fmt, title="Calls by model", width=wide(), empty=NOTHING)
    if chart and fmt is Format.table:
        typer.echo(bar_chart(rows))


def _more_filters(
    status: Status | None,
    cache: Cache | None,
    namespace: str | None,
    tags: list[str] | None,
    run: str | None = None,
    model: str | None = None,
) -> CallFilter:
    """The filters beyond the date window (which reports parses itself, with its messages)."""
    try:
        return CallFilter(
            run=run,
            model=model,
            status=status.value if status else None,
            cache=cache.value if cache else None,
            namespace=namespace,
            tags=parse_tags(tags),
        )
    except LedgerError as exc:
        fail(str(exc))


BAR_WIDTH = 40


def bar_chart(rows: list[dict[str, Any]]) -> str:
    """Cost and hit rate per model as lines of block characters (``stats --chart``)."""
    if not rows:
        return ""
    name_width = max(len(str(r["model"])) for r in rows)
    top = max(float(r["cost_usd"]) for r in rows) or 1.0

    def bar(fraction: float) -> str:
        eighths = round(max(0.0, min(1.0, fraction)) * BAR_WIDTH * 8)
        full, part = divmod(eighths, 8)
        return ("█" * full + ("▏▎▍▌▋▊▉"[part - 1] if part else "")).ljust(BAR_WIDTH)

    lines = ["", "cost_usd"]
    lines += [
        f"  {str(r['model']).ljust(name_width)}  {bar(float(r['cost_usd']) / top)}  "
        f"{Decimal(str(r['cost_usd'])):f}"
        for r in rows
    ]
    lines += ["", "hit_rate"]
    lines += [
        f"  {str(r['model']).ljust(name_width)}  {bar(r['hit_rate'])}  {r['hit_rate']:.1%}"
        for r in rows
    ]
    return "\n".join(lines)


@app.command()
def reprice(
    ctx: typer.Context,
    since: Annotated[
        str | None,
        typer.Option(help="Only rows written from this UTC date or datetime on."),
    ] = None,
    model: Annotated[str | None, typer.Option(help="Only calls to this model.")] = None,
) -> None:
    """Recompute stored costs with today's prices, LLM_LEDGER_MODEL_MAP and LLM_LEDGER_PRICES.

    Rewrites cost_usd, cost_note and price_version of paid calls and stored answers from
    their token counts, and saved_usd of cache hits. Safe to run again.

    Example: LLM_LEDGER_MODEL_MAP=prod-chat=gpt-4o-mini llm-ledger reprice --model prod-chat
    """
    with _ledger(ctx.obj.db) as ledger:
        result = reports.reprice(ledger, since=since, model=model)
    typer.echo(f"repriced {result['changed']} rows ({result['examined']} examined)")
