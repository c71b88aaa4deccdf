"""Commands: search, report, datasette-metadata (see llm_ledger/cli/__init__.py, docs/analyst.md).

Thin skins over llm_ledger.search, llm_ledger.report_html and llm_ledger.datasette.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .. import datasette, report_html, search
from ..errors import LedgerError
from ..store import db
from . import app
from .costs import _ledger
from .output import (
    FORMAT_OPTION,
    CacheOpt,
    Format,
    Model,
    Namespace,
    Run,
    Since,
    StatusOpt,
    Tags,
    Until,
    call_filter,
    emit,
    fail,
    wide,
)
from .sql import read_only

SEARCH_COLUMNS = ("id", "created_at", "model", "cache_status", "status", "run", "cost_usd")
MATCH_STYLE = "bold black on yellow"


@app.command("search")
def search_cmd(
    ctx: typer.Context,
    text: Annotated[str, typer.Argument(help="Words to find (all of them), in any case.")],
    since: Since = None,
    until: Until = None,
    run: Run = None,
    model: Model = None,
    status: StatusOpt = None,
    cache: CacheOpt = None,
    namespace: Namespace = None,
    tag: Tags = None,
    limit: Annotated[int, typer.Option(min=0, help="At most this many calls; 0: all.")] = 20,
    fmt: Format = FORMAT_OPTION,
) -> None:
    """Calls whose prompt or answer holds every word, newest first, the words highlighted.

    Uses each engine's full-text index (docs/analyst.md): SQLite FTS5, PostgreSQL tsvector,
    MariaDB FULLTEXT. A call without an answer (failed) is not searched.

    \b
    Example: llm-ledger search "refund policy" --model gpt-4o-mini --since 2026-05-01
    """
    filters = call_filter(since, until, run, model, status, cache, namespace, tag)
    try:
        found = search.words(text)
    except LedgerError as exc:
        fail(str(exc))
    with read_only(ctx.obj.db) as conn:
        try:
            rows = search.search_calls(conn, text, filters, limit)
        except LedgerError as exc:
            fail(str(exc))
    if fmt is not Format.table:
        for row in rows:
            for name in ("prompt", "answer"):
                row[f"{name}_match"] = search.marked(search.snippet(row[name], found))
        columns = (*SEARCH_COLUMNS, "system_prompt", "prompt", "answer", "finish_reason")
        emit(rows, (*columns, "prompt_match", "answer_match"), fmt)
        return
    console = Console(width=wide(), soft_wrap=False)
    if not rows:
        typer.echo(f"no calls match {text!r}")
        return
    table = Table(show_lines=True)
    for c in ("id", "created_at", "model", "cache", "prompt / answer"):
        table.add_column(c, overflow="fold")
    styled = console.is_terminal
    for row in rows:
        texts = Text()
        for label in ("prompt", "answer"):
            pieces = search.snippet(row[label], found, width=200)
            if texts:
                texts.append("\n")
            texts.append(f"{label}: ", style="dim" if styled else None)
            if not pieces:
                texts.append("-")
            for piece, hit in pieces:
                if hit and not styled:
                    piece = f"**{piece}**"
                texts.append(piece, style=MATCH_STYLE if hit and styled else None)
        created = row["created_at"]
        table.add_row(
            str(row["id"]),
            str(created)[:19] if created is not None else "",
            row["model"],
            row["cache_status"],
            texts,
        )
    console.print(table)


@app.command("report")
def report_cmd(
    ctx: typer.Context,
    html: Annotated[
        Path,
        typer.Option("--html", help="Write the report to this HTML file (one file, no network)."),
    ],
    since: Since = None,
    until: Until = None,
    run: Run = None,
    model: Model = None,
    status: StatusOpt = None,
    cache: CacheOpt = None,
    namespace: Namespace = None,
    tag: Tags = None,
) -> None:
    """Charts of spend, savings, calls, hit rate, cost by model and run, latency; one HTML file.

    The file holds its data and plotly.js (from the installed plotly package: pip install
    'llm-ledger[report]'), so it opens anywhere without a network.

    \b
    Example: llm-ledger report --html report.html --since 2026-05-01 --tag team=search
    """
    filters = call_filter(since, until, run, model, status, cache, namespace, tag)
    try:
        report_html.plotly_js()
    except LedgerError as exc:
        fail(str(exc))
    with _ledger(ctx.obj.db) as ledger:
        try:
            path = report_html.write_report(ledger, html, filters)
        except OSError as exc:
            fail(f"cannot write {html}: {exc.strerror or exc}")
    typer.echo(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB); open it in a browser")


@app.command("datasette-metadata")
def datasette_metadata_cmd(
    ctx: typer.Context,
    name: Annotated[
        str | None,
        typer.Option(help="The database's name in Datasette (default: the ledger file's stem)."),
    ] = None,
) -> None:
    """Print Datasette metadata (JSON): column descriptions, search, canned queries.

    \b
    Example: llm-ledger datasette-metadata > metadata.json
             datasette llm_ledger.db -m metadata.json
    """
    path = db.sqlite_path(db.normalize_url(ctx.obj.db))
    if name is None:
        if path is None:
            fail("Datasette reads SQLite files; give --name for a server ledger's metadata")
        name = datasette.database_name(path)
    typer.echo(json.dumps(datasette.metadata(name), ensure_ascii=False, indent=2))
