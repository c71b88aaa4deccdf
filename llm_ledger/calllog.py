"""Reading the audit log the way ``llm-ledger calls`` and ``llm-ledger show`` print it.

Python callers get what the CLI shows: :func:`find_calls` (one summary row per call,
newest first, with the prompt cut short) and :func:`get_call` (one call in full, grouped
as ``show`` prints it). Both take a SQLAlchemy connection (the CLI's is read-only), a
:class:`~llm_ledger.store.repository.Ledger`, or a ledger location.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import Text, cast, func, or_, select
from sqlalchemy.engine import Connection

from . import keys
from .store.models import CallLog, Request, Response
from .store.repository import Ledger
from .timebounds import parse_time

_LOG: Any = CallLog.__table__
_REQ: Any = Request.__table__
_RESP: Any = Response.__table__

PROMPT_CHARS = 60
CALL_COLUMNS = (
    "id",
    "created_at",
    "kind",
    "model",
    "cache_status",
    "status",
    "attempts",
    "latency_ms",
    "total_tokens",
    "cost_usd",
    "prompt",
)
"""The columns of a :func:`find_calls` row (``prompt``: :func:`prompt_of` the request)."""
USAGE = (
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "total_tokens",
    "tokens_estimated",
)
COST = ("cost_usd", "saved_usd", "cost_note", "price_version")
ERROR = ("error_type", "error_message")
STREAM = ("stream_status", "first_chunk_ms", "chunks")

Source = Connection | Ledger | str


@contextlib.contextmanager
def _connection(source: Source) -> Iterator[Connection]:
    if isinstance(source, Connection):
        yield source
        return
    from .store.selection import opened

    with opened(source) as ledger, ledger.engine.connect() as conn:
        yield conn


def find_calls(
    source: Source,
    *,
    model: str | None = None,
    since: str | date | datetime | None = None,
    until: str | date | datetime | None = None,
    run: str | None = None,
    status: str | None = None,
    cache: str | None = None,
    search: str | None = None,
    limit: int = 20,
    namespace: str | None = None,
    tags: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
) -> list[dict[str, Any]]:
    """Calls newest first, as rows of :data:`CALL_COLUMNS`; ``limit`` 0 means all.

    ``since``/``until``: UTC bounds as :func:`llm_ledger.timebounds.parse_time` reads them
    (a date alone as ``until`` includes that day). ``search``: text in the request or the
    answer JSON, case-insensitive (a substring, not the word index of ``llm-ledger
    search``). ``namespace``: the cache namespace. ``tags``: name -> value pairs a call
    must all have (the same conditions as :class:`llm_ledger.filters.CallFilter`).
    """
    lo, hi = parse_time(since, "since"), parse_time(until, "until", end=True)
    stmt = (
        select(*(_LOG.c[c] for c in CALL_COLUMNS[:-1]), _REQ.c.request)
        .join_from(_LOG, _REQ, _REQ.c.request_hash == _LOG.c.request_hash)
        .order_by(_LOG.c.created_at.desc(), _LOG.c.id.desc())
    )
    for column, value in (
        (_LOG.c.model, model),
        (_LOG.c.run, run),
        (_LOG.c.status, status),
        (_LOG.c.cache_status, cache),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    pairs = tuple(tags.items()) if isinstance(tags, Mapping) else tuple(tags or ())
    if namespace is not None or pairs:
        from .filters import CallFilter

        stmt = stmt.where(*CallFilter(namespace=namespace, tags=pairs).conditions(_LOG))
    if lo is not None:
        stmt = stmt.where(_LOG.c.created_at >= lo)
    if hi is not None:
        stmt = stmt.where(_LOG.c.created_at < hi)
    if search:
        needle = search.lower()
        stmt = stmt.outerjoin(_RESP, _RESP.c.id == _LOG.c.response_id).where(
            or_(
                func.lower(cast(_REQ.c.request, Text)).contains(needle, autoescape=True),
                func.lower(cast(_RESP.c.response, Text)).contains(needle, autoescape=True),
            )
        )
    if limit:
        stmt = stmt.limit(limit)
    with _connection(source) as conn:
        rows = [dict(row._mapping) for row in conn.execute(stmt)]
    for row in rows:
        row["prompt"] = prompt_of(row.pop("request"))
    return rows


def prompt_of(request: Any) -> str:
    """The last message of a chat request (the input of an embedding), on one line, cut short."""
    if isinstance(request, str):
        try:
            request = json.loads(request)
        except ValueError:
            return " ".join(request.split())[:PROMPT_CHARS]
    if not isinstance(request, dict):
        return ""
    messages = request.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        found = keys.message_text(messages[-1])
    elif isinstance(request.get("input"), str):
        found = request["input"]
    elif isinstance(request.get("input"), list):
        found = " ".join(str(item) for item in request["input"])
    else:
        found = ""
    return " ".join(found.split())[:PROMPT_CHARS]


def get_call(source: Source, call: int | str) -> dict[str, Any] | None:
    """One call by id (an int, or digits) or call_uuid: :func:`call_document` plus ``row``
    (the audit row as it is); None if there is no such call."""
    text = str(call)
    where = _LOG.c.id == int(text) if text.isdigit() else _LOG.c.call_uuid == text
    with _connection(source) as conn:
        found = conn.execute(select(_LOG).where(where)).mappings().first()
        if found is None:
            return None
        row = dict(found)
        request = conn.execute(
            select(_REQ.c.request).where(_REQ.c.request_hash == row["request_hash"])
        ).scalar()
        response = None
        if row["response_id"] is not None:
            response = conn.execute(
                select(_RESP.c.response).where(_RESP.c.id == row["response_id"])
            ).scalar()
    return {**call_document(row, request, response), "row": row}


def call_document(row: dict[str, Any], request: Any, response: Any) -> dict[str, Any]:
    """What `show` prints: the audit row grouped (call, usage, cost, error; stream for a
    streamed call only), request, response."""
    grouped = set(USAGE) | set(COST) | set(ERROR) | set(STREAM)
    failed = row["error_type"] is not None or row["error_message"] is not None
    doc: dict[str, Any] = {
        "call": {k: v for k, v in row.items() if k not in grouped},
        "usage": {k: row[k] for k in USAGE},
        "cost": {k: row[k] for k in COST},
        "error": {k: row[k] for k in ERROR} if failed else None,
    }
    if row.get("stream_status") is not None:  # only streamed calls (llm_ledger.openai) have one
        doc["stream"] = {k: row.get(k) for k in STREAM}
    return {**doc, "request": request, "response": response}
