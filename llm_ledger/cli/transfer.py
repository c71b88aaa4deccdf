"""Commands that move or trim a ledger: export, import, copy, import-pickle, prune, vacuum.

See docs/transfer.md (what each does exactly) and docs/bundle-format.md.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from .. import bulk, pickles, transfer
from ..errors import ConfigError
from ..store.db import describe, normalize_url
from ..timebounds import DATE_FORMAT_HELP, parse_time
from . import app
from .output import FORMAT_OPTION, Format, Since, Until, emit, fail, failing

ProgressOption = Annotated[
    bool,
    typer.Option(
        "--progress", help="Show a progress bar on stderr (default: when it is a terminal)."
    ),
]
TALLY_COLUMNS = ("records", "added", "already_present", "refused")


def _progress(flag: bool) -> bool:
    return flag or sys.stderr.isatty()


def _when(value: str | None, option: str, *, end: bool = False) -> datetime | None:
    try:
        return parse_time(value, option, end=end)
    except ConfigError:
        fail(f"{option}: {value!r} is not a date: expected {DATE_FORMAT_HELP}")


def _tallies(result: dict[str, Any], fmt: Format, verb: str) -> None:
    """Per kind of record: added / already present / refused, their total, then the summary.

    A call's tags travel inside its record: they are not records of their own, so the table
    (which adds up to its total) leaves them out, and a line says what became of them.
    """
    rows = [{"records": k, **result[k]} for k in bulk.MERGED if k != "call_tags"]
    rows.append({"records": "total", **{c: result[c] for c in TALLY_COLUMNS[1:]}})
    emit(rows, TALLY_COLUMNS, fmt)
    if fmt is not Format.table:
        return
    tags = result.get("call_tags")
    if tags and any(tags.values()):
        typer.echo(
            f"call tags (inside the calls above): {tags['added']} added, "
            f"{tags['already_present']} already present, {tags['refused']} refused"
        )
    for reason, n in result["refused_reasons"].items():
        typer.echo(f"refused {n}: {reason}")
    if result["added"] == 0 and result["refused"] == 0 and result["already_present"]:
        typer.echo(f"nothing new: all {result['already_present']} records were already present")
    typer.echo(
        f"{verb}: {result['added']} added, {result['already_present']} already present, "
        f"{result['refused']} refused"
    )


@app.command("export")
def export_cmd(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Bundle to write (gzip when it ends in .gz).")],
    since: Since = None,
    until: Until = None,
    model: Annotated[
        str | None, typer.Option(help="Only calls to, and cached answers for, this model.")
    ] = None,
    run: Annotated[
        str | None, typer.Option(help="Only calls of this run, and the cached answers they used.")
    ] = None,
    cache_only: Annotated[
        bool, typer.Option("--cache-only", help="Cache entries, their requests and answers only.")
    ] = False,
    progress: ProgressOption = False,
    fmt: Format = FORMAT_OPTION,
) -> None:
    """Write the ledger, or the part the filters select, to a portable bundle file.

    Example: llm-ledger export june.jsonl.gz --since 2025-06-01 --until 2025-06-30
    """
    with failing():
        result = transfer.export_bundle(
            ctx.obj.db,
            file,
            since=_when(since, "--since"),
            until=_when(until, "--until", end=True),
            model=model,
            run=run,
            cache_only=cache_only,
            progress=_progress(progress),
        )
    counts = result["counts"]
    row = {"path": result["path"], **counts, "bytes": result["bytes"], "sha256": result["sha256"]}
    emit([row], list(row), fmt)
    if fmt is Format.table:
        typer.echo(f"exported: {sum(counts.values())} records to {result['path']}")


@app.command("import")
def import_cmd(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="A bundle written by `llm-ledger export`.")],
    progress: ProgressOption = False,
    fmt: Format = FORMAT_OPTION,
) -> None:
    """Merge a bundle into the ledger; importing the same bundle again adds nothing.

    The whole file is checked first: a corrupt, truncated, modified or too-new bundle
    is refused before anything is written.

    Example: llm-ledger --db postgresql://me@db.internal/ledger import june.jsonl.gz
    """
    with failing():
        result = transfer.import_bundle(ctx.obj.db, file, progress=_progress(progress))
    _tallies(result, fmt, "imported")


@app.command("copy")
def copy_cmd(
    ctx: typer.Context,
    to: Annotated[str, typer.Option("--to", help="Target ledger path or SQLAlchemy URL.")],
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per read and per write.")] = 5000,
    progress: ProgressOption = False,
    fmt: Format = FORMAT_OPTION,
) -> None:
    """Copy the whole ledger into another database (created or upgraded): row for row, ids
    included, into an empty one; merging like import into one that holds rows.

    Example: llm-ledger --db llm_ledger.db copy --to postgresql://me@db.internal/ledger
    """
    with failing():
        result = transfer.copy_ledger(
            ctx.obj.db, to, batch_size=batch_size, progress=_progress(progress)
        )
    _tallies(result, fmt, "copied")
    if fmt is Format.table:
        rate = result["rows_written"] / result["seconds"] if result["seconds"] else 0.0
        tags = result.get("call_tags", {}).get("added", 0)
        typer.echo(
            f"{result['rows_written']} rows written to {describe(normalize_url(to))} "
            f"in {result['seconds']:.1f} s ({rate:,.0f} rows/s): {result['added']} records"
            f" + {tags} call tags"
        )


@app.command("import-pickle")
def import_pickle_cmd(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="The seed's openai_api_cache.pickle.")],
    namespace: Annotated[
        str, typer.Option(help="Cache namespace the imported entries go to.")
    ] = "",
    fmt: Format = FORMAT_OPTION,
) -> None:
    """Import the seed's pickle cache, so those calls become cache hits.

    Only OpenAI response objects and plain containers are unpickled; a file that
    names any other code is refused without running it.

    Example: llm-ledger import-pickle openai_api_cache.pickle
    """
    with failing():
        result = pickles.import_pickle(ctx.obj.db, file, namespace=namespace)
    _tallies(result, fmt, "imported")
    if fmt is Format.table:
        if result["skipped"]:
            reasons = "; ".join(f"{n} × {r}" for r, n in result["skip_reasons"].items())
            typer.echo(f"skipped {result['skipped']} entries: {reasons}")
        typer.echo(
            f"pickle entries: {result['entries']}, cache entries added: "
            f"{result['cache_entries']['added']}, skipped: {result['skipped']}"
        )


@app.command("prune")
def prune_cmd(
    ctx: typer.Context,
    before: Annotated[
        str,
        typer.Option(help="Delete what is older than this UTC date (its midnight) or datetime."),
    ],
    keep_cache: Annotated[
        bool, typer.Option("--keep-cache", help="Delete audit rows only; keep every cache entry.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what would go; change nothing.")
    ] = False,
    fmt: Format = FORMAT_OPTION,
) -> None:
    """Delete audit rows older than a date, and cached answers nothing uses anymore.

    Without --keep-cache, cache entries whose answer is older than the date and that no
    remaining audit row refers to go too; responses and requests older than the date
    that nothing refers to anymore go in both cases.

    Example: llm-ledger prune --before 2025-01-01 --dry-run
    """
    when = _when(before, "--before")
    assert when is not None
    with failing():
        result = bulk.prune(ctx.obj.db, when, keep_cache=keep_cache, dry_run=dry_run)
    column = "would_delete" if dry_run else "deleted"
    rows = [{"table": t, column: n} for t, n in result["deleted"].items()]
    emit(rows, ("table", column), fmt)
    if fmt is Format.table:
        total = sum(result["deleted"].values())
        if dry_run:
            typer.echo(
                f"dry run: {total} rows from before {result['before']} would go; nothing changed"
            )
        else:
            typer.echo(f"pruned: {total} rows from before {result['before']}")


@app.command("vacuum")
def vacuum_cmd(ctx: typer.Context, fmt: Format = FORMAT_OPTION) -> None:
    """Give free space back (SQLite VACUUM, PostgreSQL VACUUM ANALYZE, MariaDB OPTIMIZE TABLE).

    Prints the ledger's size in bytes before and after, where the engine can tell.

    Example: llm-ledger --db postgresql://me@db.internal/ledger vacuum
    """
    with failing():
        result = bulk.vacuum(ctx.obj.db)
    emit([result], ("database", "engine", "bytes_before", "bytes_after"), fmt)
