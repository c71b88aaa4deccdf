"""Cost reports over the ledger, and ``reprice``: SQLAlchemy Core on SQLite, PostgreSQL, MariaDB.

``costs`` and ``stats`` only read. ``reprice`` is the one maintenance write that lives
outside repository.py: it never records a call, it corrects the price columns of rows
already written (after a price-table update, or once a deployment name has been mapped),
so it belongs with the reports that read those columns rather than with the call path.

Conventions shared by every report:

- time bounds are naive UTC (like the ledger); ``since`` is inclusive, ``until`` given as a
  date includes that whole day, given as a datetime it is exclusive;
- token columns count what was billed: a cache hit's tokens are not summed (what the hit
  would have cost shows up as ``saved_usd`` instead);
- grouping and ordering happen in SQL and Python respectively, so every engine returns the
  same order (cost descending, then the group name, groups without a name last).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, case, func, select, text, update
from sqlalchemy.engine import Connection

from . import pricing
from .errors import ConfigError
from .filters import CallFilter
from .records import Usage
from .store.models import CallLog, CallTag, Request, Response
from .store.repository import Ledger
from .timebounds import parse_time, time_range

__all__ = ["GROUPINGS", "costs", "parse_time", "reprice", "stats", "time_range"]

_LOG = CallLog.__table__
_TAGS = CallTag.__table__
_RESP = Response.__table__
_REQ = Request.__table__

GROUPINGS = ("model", "day", "run", "tag", "template")
_TEN_PLACES = Decimal("1e-10")  # the ledger's Money columns keep 10 decimal places
PAID = ("miss", "bypass")  # cache_status of calls that went to the API


def _where(
    lo: datetime | None, hi: datetime | None, run: str | None = None, model: str | None = None
) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if lo is not None:
        where.append(_LOG.c.created_at >= lo)
    if hi is not None:
        where.append(_LOG.c.created_at < hi)
    if run is not None:
        where.append(_LOG.c.run == run)
    if model is not None:
        where.append(_LOG.c.model == model)
    return where


# --- aggregates ---------------------------------------------------------------


def _count_if(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    return func.sum(case((condition, 1), else_=0))


def _billed(column: Any) -> ColumnElement[Any]:
    return func.coalesce(func.sum(case((_LOG.c.cache_status != "hit", column))), 0)


def _usage_columns() -> list[ColumnElement[Any]]:
    return [
        func.count().label("calls"),
        _count_if(_LOG.c.cache_status == "hit").label("hits"),
        _billed(_LOG.c.prompt_tokens).label("prompt_tokens"),
        _billed(_LOG.c.completion_tokens).label("completion_tokens"),
        func.coalesce(func.sum(_LOG.c.cost_usd), 0).label("cost_usd"),
        func.coalesce(func.sum(_LOG.c.saved_usd), 0).label("saved_usd"),
        _count_if(
            and_(
                _LOG.c.cache_status.in_(PAID),
                _LOG.c.status == "ok",
                _LOG.c.cost_usd.is_(None),
            )
        ).label("unpriced"),
    ]


def _money(value: Any) -> Decimal:
    """Sums come back as Decimal (PostgreSQL, MariaDB) or float/int (SQLite, or a bare 0)."""
    if value is None:
        return Decimal(0)
    if not isinstance(value, Decimal):
        value = Decimal(str(round(float(value), 10)))
    return value.normalize() if value == value.to_integral() else value


def _usage(row: Any) -> dict[str, Any]:
    return {
        "calls": int(row.calls),
        "hits": int(row.hits or 0),
        "prompt_tokens": int(row.prompt_tokens),
        "completion_tokens": int(row.completion_tokens),
        "cost_usd": _money(row.cost_usd),
        "saved_usd": _money(row.saved_usd),
    }


def _order(rows: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: (-r["cost_usd"], r[key] is None, r[key] or ""))


@contextlib.contextmanager
def _reading(source: Ledger | Connection) -> Iterator[Connection]:
    """A connection to report from: the caller's (e.g. a read-only one: ``llm-ledger costs``
    neither migrates nor replays a spool), or a new one of the ledger, after this process's
    queued hit rows are written."""
    if isinstance(source, Connection):
        yield source
        return
    source.flush()  # records still queued by this process (writebehind.py)
    with source.engine.connect() as conn:
        yield conn


def costs(
    ledger: Ledger | Connection,
    by: str = "model",
    since: str | date | datetime | None = None,
    until: str | date | datetime | None = None,
    run: str | None = None,
    model: str | None = None,
    *,
    with_unpriced: bool = False,
    filters: CallFilter | None = None,
) -> list[dict[str, Any]]:
    """Calls, hits, billed tokens, cost and savings per model, day, run, tag or template.

    ``group`` is the model, 'YYYY-MM-DD' (UTC), run, 'name=value' or template name; None for
    calls without a run / template. A call with two tags counts under each of them, so
    ``by="tag"`` rows do not add up to the ledger's total. ``with_unpriced`` adds
    ``unpriced``: answered API calls of the group whose cost is unknown (NULL), which the
    ``cost_usd`` total therefore leaves out. ``filters`` adds more conditions (tags,
    status, namespace, ...: :class:`llm_ledger.filters.CallFilter`).
    """
    if by not in GROUPINGS:
        raise ConfigError(f"by={by!r}: expected one of {', '.join(GROUPINGS)}")
    lo, hi = time_range(since, until)
    where = _where(lo, hi, run, model) + (filters.conditions() if filters else [])
    found: list[tuple[str | None, Any]]
    with _reading(ledger) as conn:
        if by == "day":
            found = _by_day(conn, where)
        elif by == "tag":
            stmt = (
                select(_TAGS.c.name, _TAGS.c.value, *_usage_columns())
                .join_from(_LOG, _TAGS, _TAGS.c.call_id == _LOG.c.id)
                .where(*where)
                .group_by(_TAGS.c.name, _TAGS.c.value)
            )
            found = [(f"{r.name}={r.value}", r) for r in conn.execute(stmt)]
        else:
            key = _LOG.c[by]
            stmt = select(key, *_usage_columns()).where(*where).group_by(key)
            found = [(r[0], r) for r in conn.execute(stmt)]
    rows = []
    for group, row in found:
        out = {"group": group, **_usage(row)}
        if with_unpriced:
            out["unpriced"] = int(row.unpriced or 0)
        rows.append(out)
    return _order(rows, "group")


def _by_day(conn: Connection, where: list[ColumnElement[bool]]) -> list[tuple[str | None, Any]]:
    """One aggregate per UTC day that has calls, each over a created_at range.

    Equivalent to GROUP BY date(created_at), but every query is a range of the created_at
    index in order, where the GROUP BY would sort a million rows (SQLite cannot see that a
    day's rows are contiguous in that index). Two indexed queries per day with calls; days
    without calls are skipped by the min() probe.
    """
    found: list[tuple[str | None, Any]] = []
    start: datetime | None = None
    while True:
        after = [] if start is None else [_LOG.c.created_at >= start]
        first = conn.execute(select(func.min(_LOG.c.created_at)).where(*where, *after)).scalar()
        if first is None:
            return found
        start = datetime(first.year, first.month, first.day)
        end = start + timedelta(days=1)
        day = (_LOG.c.created_at >= start, _LOG.c.created_at < end)
        row = conn.execute(select(*_usage_columns()).where(*where, *day)).one()
        found.append((start.date().isoformat(), row))
        start = end


def stats(
    ledger: Ledger | Connection,
    since: str | date | datetime | None = None,
    until: str | date | datetime | None = None,
    *,
    filters: CallFilter | None = None,
) -> list[dict[str, Any]]:
    """Per model: calls, hits, hit rate, billed tokens, cost, savings, p50/p95 latency.

    Latency percentiles are over answered API calls (status ok, not a hit): a hit's latency
    measures the database, not the model. They are exact nearest-rank percentiles (the
    smallest latency with at least p% of those calls at or below it), read with one
    ``ORDER BY latency_ms LIMIT 1 OFFSET k`` query per model and percentile. With the
    (model, latency_ms, ...) index of migration 0002 that walks an index instead of sorting,
    so memory stays constant however many rows there are.
    """
    lo, hi = time_range(since, until)
    where = _where(lo, hi) + (filters.conditions() if filters else [])
    stmt = select(_LOG.c.model, *_usage_columns()).where(*where).group_by(_LOG.c.model)
    rows = []
    with _reading(ledger) as conn:
        for row in conn.execute(stmt).all():
            usage = _usage(row)
            p50, p95 = _latency_percentiles(conn, row.model, where, (0.50, 0.95))
            rows.append(
                {
                    "model": row.model,
                    **usage,
                    "hit_rate": round(usage["hits"] / usage["calls"], 4),
                    "p50_latency_ms": p50,
                    "p95_latency_ms": p95,
                }
            )
    return _order(rows, "model")


# A literal, so SQLite and PostgreSQL see that the partial latency index (0003) applies.
_NOT_A_HIT = text("call_log.cache_status <> 'hit'")


def _latency_percentiles(
    conn: Connection, model: str, where: Sequence[ColumnElement[bool]], ps: Sequence[float]
) -> list[float | None]:
    timed: list[Any] = [
        _LOG.c.model == model,
        _LOG.c.latency_ms.is_not(None),
        _LOG.c.status == "ok",
        _LOG.c.cache_status.in_(PAID),
        _NOT_A_HIT,  # implied by the line above; spelt as ix_call_log_model_latency's condition
        *where,
    ]
    n = conn.execute(select(func.count()).select_from(_LOG).where(*timed)).scalar_one()
    out: list[float | None] = []
    for p in ps:
        if not n:
            out.append(None)
            continue
        k = max(math.ceil(p * n) - 1, 0)  # nearest rank, 0-based
        stmt = select(_LOG.c.latency_ms).where(*timed).order_by(_LOG.c.latency_ms)
        value = conn.execute(stmt.limit(1).offset(k)).scalar_one()
        out.append(float(value))
    return out


# --- reprice: the one maintenance write outside repository.py ------------------


def reprice(
    ledger: Ledger,
    since: str | date | datetime | None = None,
    model: str | None = None,
    config: pricing.PricingConfig | None = None,
    *,
    batch_size: int = 500,
) -> dict[str, int]:
    """Recompute stored costs from stored token counts with today's prices and mappings.

    Rewrites ``cost_usd``, ``cost_note`` and ``price_version`` of ``responses`` rows and of
    ``call_log`` rows that were paid API calls (miss/bypass, status ok), then the
    ``saved_usd`` of hits from the response they were served (``call_log.response_id``).
    ``model`` is the requested model (deployment) name; ``since`` bounds each row's own
    ``created_at``. Priced by the write path's own rule (``pricing.price_answer``: the
    mapping, else the model the response names, else the requested one); ``config``
    defaults to LLM_LEDGER_MODEL_MAP / LLM_LEDGER_PRICES.

    Why here and not in repository.py: this never records a call; it corrects derived
    columns of rows already written, and it is run by hand (``llm-ledger reprice``).
    Pages of ``batch_size`` rows are committed one at a time, so a live ledger is never
    locked for long; it is idempotent, so an interrupted run is finished by running it
    again. Embedding calls that were served several stored items at once keep their
    ``saved_usd``: the ledger does not record which stored answers served them.

    Returns ``{"examined": rows looked at, "changed": rows whose values changed}``.
    """
    if config is None:
        try:
            config = pricing.PricingConfig.from_env(os.environ)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    lo = parse_time(since, "since")

    def new_cost(row: Any) -> dict[str, Any] | None:
        response = {
            "model": row.response_model,
            "object": "list" if row.kind == "embedding" else None,
        }
        usage = Usage(*(row._mapping[c] for c in _TOKENS))
        cost = pricing.price_answer(row.model, response, usage, config)
        unchanged = (
            _same_money(row.cost_usd, cost.cost_usd)
            and row.cost_note == cost.note
            and row.price_version == cost.price_version
        )
        if unchanged:
            return None
        return {"b_cost": cost.cost_usd, "b_note": cost.note, "b_version": cost.price_version}

    def new_saving(row: Any) -> dict[str, Any] | None:
        return None if _same_money(row.saved_usd, row.served_cost) else {"b_saved": row.served_cost}

    response_model = _RESP.c.response["model"].as_string().label("response_model")
    responses = (
        select(_RESP.c.id, _REQ.c.model, _REQ.c.kind, response_model, *_repriced(_RESP))
        .join_from(_RESP, _REQ, _REQ.c.request_hash == _RESP.c.request_hash)
        .where(*([] if lo is None else [_RESP.c.created_at >= lo]))
        .where(*([] if model is None else [_REQ.c.model == model]))
    )
    calls = _where(lo, None, None, model)
    paid = (
        select(_LOG.c.id, _LOG.c.model, _LOG.c.kind, response_model, *_repriced(_LOG))
        .outerjoin_from(_LOG, _RESP, _RESP.c.id == _LOG.c.response_id)
        .where(_LOG.c.cache_status.in_(PAID), _LOG.c.status == "ok", *calls)
    )
    hits = (
        select(_LOG.c.id, _LOG.c.saved_usd, _RESP.c.cost_usd.label("served_cost"))
        .join_from(_LOG, _RESP, _RESP.c.id == _LOG.c.response_id)
        .where(_LOG.c.cache_status == "hit", _LOG.c.status == "ok", *calls)
    )
    totals = {"examined": 0, "changed": 0}
    # Responses first: hits take their saving from the repriced answer.
    for query, table, change, statement in (
        (responses, _RESP, new_cost, _update(_RESP, **_PRICE_COLUMNS)),
        (paid, _LOG, new_cost, _update(_LOG, **_PRICE_COLUMNS)),
        (hits, _LOG, new_saving, _update(_LOG, saved_usd="b_saved")),
    ):
        _in_batches(ledger, query, table, change, statement, batch_size, totals)
    return totals


_TOKENS = (
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "total_tokens",
)
_PRICE_COLUMNS = {"cost_usd": "b_cost", "cost_note": "b_note", "price_version": "b_version"}


def _repriced(table: Any) -> list[Any]:
    """What a price is computed from, and the columns it is written to."""
    return [table.c[c] for c in (*_TOKENS, *_PRICE_COLUMNS)]


def _update(table: Any, **columns: str) -> Any:
    """UPDATE table SET column = :param ... WHERE id = :b_id, for executemany."""
    values = {c: bindparam(p, type_=table.c[c].type) for c, p in columns.items()}
    return update(table).where(table.c.id == bindparam("b_id")).values(values)


def _same_money(a: Decimal | None, b: Decimal | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return Decimal(a).quantize(_TEN_PLACES) == Decimal(b).quantize(_TEN_PLACES)


def _in_batches(
    ledger: Ledger,
    query: Any,
    table: Any,
    change: Callable[[Any], dict[str, Any] | None],
    statement: Any,
    batch_size: int,
    totals: dict[str, int],
) -> None:
    """Apply ``statement`` to the rows of ``query`` that ``change`` alters, a page at a time.

    The matching ids are read first (one pass over an index), then each page is fetched by
    primary key and updated in its own transaction. Paging with ``id > last ORDER BY id
    LIMIT n`` instead would re-scan and re-sort every match for every page when the filter
    uses another index (``--model``): quadratic on a big ledger.
    """
    ledger.flush()  # records still queued by this process (writebehind.py)
    with ledger.engine.connect() as conn:
        ids = sorted(conn.execute(query.with_only_columns(table.c.id)).scalars())
    for start in range(0, len(ids), batch_size):
        page = ids[start : start + batch_size]
        with ledger.engine.begin() as conn:
            rows = conn.execute(query.where(table.c.id.in_(page))).all()
            updates = [{"b_id": r.id, **v} for r in rows if (v := change(r)) is not None]
            if updates:
                conn.execute(statement, updates)
        totals["examined"] += len(rows)
        totals["changed"] += len(updates)
