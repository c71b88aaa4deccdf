"""Commands: calls, show (the audit log; the queries are llm_ledger.calllog's)."""

from __future__ import annotations

from typing import Annotated

import typer

from .. import calllog
from . import app
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
    emit,
    emit_fields,
    emit_json_block,
    emit_object,
    fail,
    tag_option,
    time_option,
    where,
    wide,
)
from .sql import read_only

MAX_ID = 2**63 - 1  # the largest BIGINT: ids and LIMITs beyond it fit no engine


@app.command()
def calls(
    ctx: typer.Context,
    model: Model = None,
    since: Since = None,
    until: Until = None,
    run: Run = None,
    status: StatusOpt = None,
    cache: CacheOpt = None,
    namespace: Namespace = None,
    tag: Tags = None,
    search: Annotated[
        str | None,
        typer.Option(
            help="Text in the request or the answer JSON (case-insensitive substring; "
            "`llm-ledger search` is the full-text search)."
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=0, help="At most this many calls; 0: all.")] = 20,
    fmt: Format = FORMAT_OPTION,
) -> None:
    """The call log, newest first: one line per call with its prompt (first 60 characters).

    \b
    Example: llm-ledger calls --model gpt-4o-mini --since 2026-05-01 --cache miss --limit 50
    """
    lo, hi = time_option(since, "--since"), time_option(until, "--until", end=True)
    pairs = tag_option(tag)
    if limit > MAX_ID:
        fail(f"--limit {limit}: at most {MAX_ID} (or 0: every call)")
    with read_only(ctx.obj.db) as conn:
        rows = calllog.find_calls(
            conn,
            model=model,
            since=lo,
            until=hi,
            run=run,
            status=status.value if status else None,
            cache=cache.value if cache else None,
            search=search,
            limit=limit,
            namespace=namespace,
            tags=pairs,
        )
    emit(rows, calllog.CALL_COLUMNS, fmt, width=wide(), empty="no calls match these filters")


@app.command()
def show(
    ctx: typer.Context,
    call: Annotated[str, typer.Argument(help="The call's id (from `calls`) or its call_uuid.")],
    fmt: Format = FORMAT_OPTION,
) -> None:
    """One call in full: its audit row, request, response, usage, cost, attempts and error.

    \b
    Example: llm-ledger show 42 --format json
    """
    if call.isdigit() and int(call) > MAX_ID:  # no id is that large (and no engine takes it)
        fail(f"no call {call} in {where(ctx.obj.db)}; `llm-ledger calls` lists them")
    with read_only(ctx.obj.db) as conn:
        doc = calllog.get_call(conn, call)
    if doc is None:
        fail(f"no call {call} in {where(ctx.obj.db)}; `llm-ledger calls` lists them")
    row = doc.pop("row")
    request, response = doc["request"], doc["response"]
    if fmt is Format.json:
        emit_object(doc)
        return
    if fmt is Format.csv:
        flat = {**row, "request": request, "response": response}
        emit([flat], list(flat), fmt)
        return
    emit_fields(f"call {row['id']}", doc["call"].items())
    for section in ("usage", "cost"):
        emit_fields(section, doc[section].items())
    emit_fields("error", (doc["error"] or {}).items())
    if "stream" in doc:
        emit_fields("stream", doc["stream"].items())
    emit_json_block("request", request)
    emit_json_block("response", response)
