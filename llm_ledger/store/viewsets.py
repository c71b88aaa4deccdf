"""The analyst views as each schema revision defines them, and the helper migrations use.

A migration that changes a view, or a table a view reads, recreates every view with
:func:`rebuilt_views`, naming the view set of its own revision::

    from llm_ledger.store.viewsets import rebuilt_views

    def upgrade() -> None:
        with rebuilt_views("0005"):        # views dropped here ...
            op.add_column("call_log", sa.Column("prompt_text", sa.Text(), nullable=True))
        # ... and created again from VIEW_SETS["0005"] here

    def downgrade() -> None:
        with rebuilt_views("0001"):        # the set the previous revision used
            op.drop_column("call_log", "prompt_text")

A set whose SQL differs per engine is a function of the dialect name (``"sqlite"``,
``"postgresql"``, ``"mysql"``/``"mariadb"``) returning the views, like ``"0008"``.

To add a set: copy the newest one in :data:`VIEW_SETS` under the new revision id and edit
the copy (say, add the new column to ``calls``). Never edit a set once a migration uses
it: old migrations must create what they created when they were written, so each set is
frozen at its revision. (Dropping the views first also lets SQLite's batch mode rebuild a
table a view reads.)

A new ``call_log`` column cannot silently miss the ``calls`` view: when the block ends,
:func:`rebuilt_views` compares the ``calls`` view of the set with the columns the table
has at that moment (asking the database for the columns the SELECT yields), and fails the
migration naming any column the view leaves out.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from alembic import op
from sqlalchemy import inspect, text

from . import textviews

# The cost views count billed tokens: a hit's row carries the tokens of the answer it served
# (what it would have cost), which they leave out, as the cost reports do.
_USAGE_0001 = (
    "COUNT(*) AS calls, "
    "SUM(CASE WHEN cache_status = 'hit' THEN 1 ELSE 0 END) AS hits, "
    "SUM(CASE WHEN status = 'error' THEN 1 ELSE 0 END) AS errors, "
    "SUM(CASE WHEN cache_status <> 'hit' THEN prompt_tokens END) AS prompt_tokens, "
    "SUM(CASE WHEN cache_status <> 'hit' THEN completion_tokens END) AS completion_tokens, "
    "SUM(CASE WHEN cache_status <> 'hit' THEN total_tokens END) AS total_tokens, "
    "SUM(cost_usd) AS cost_usd, SUM(saved_usd) AS saved_usd"
)

ViewSet = Mapping[str, str] | Callable[[str], Mapping[str, str]]
"""Views by name (the same SQL on every engine), or a function of the dialect name giving them."""

VIEW_SETS: dict[str, ViewSet] = {
    # Created by migration 0001 (which holds its own copy); unchanged through 0006 and 0004.
    "0001": {
        "calls": (
            "SELECT id, call_uuid, created_at, kind, api_type, endpoint_host, model, namespace, "
            "request_hash, slot, response_id, cache_status, status, attempts, latency_ms, "
            "prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, total_tokens, "
            "tokens_estimated, items_total, items_hit, error_type, error_message, cost_usd, "
            "saved_usd, cost_note, price_version, run, tags, template, library_version "
            "FROM call_log"
        ),
        "daily_usage": (
            f"SELECT date(created_at) AS day, model, {_USAGE_0001} "
            "FROM call_log GROUP BY date(created_at), model"
        ),
        "model_costs": (
            f"SELECT model, {_USAGE_0001}, AVG(latency_ms) AS avg_latency_ms, "
            "MIN(created_at) AS first_call, MAX(created_at) AS last_call FROM call_log "
            "GROUP BY model"
        ),
        "cached_answers": (
            "SELECT c.id AS id, c.namespace AS namespace, c.request_hash AS request_hash, "
            "c.slot AS slot, q.kind AS kind, q.model AS model, q.request AS request, "
            "r.response AS response, r.cost_usd AS cost_usd, c.created_at AS created_at, "
            "c.updated_at AS updated_at FROM cache_entries c "
            "JOIN requests q ON q.request_hash = c.request_hash "
            "JOIN responses r ON r.id = c.response_id"
        ),
    },
}
"""Schema revision -> the views it defines (name -> SELECT), in creation order."""


# Migration 0007: the stream audit columns join ``calls``; the other views are 0001's.
_SET_0001 = VIEW_SETS["0001"]
assert isinstance(_SET_0001, Mapping)
VIEW_SETS["0007"] = {
    **_SET_0001,
    "calls": (
        "SELECT id, call_uuid, created_at, kind, api_type, endpoint_host, model, namespace, "
        "request_hash, slot, response_id, cache_status, status, attempts, latency_ms, "
        "prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, total_tokens, "
        "tokens_estimated, items_total, items_hit, error_type, error_message, cost_usd, "
        "saved_usd, cost_note, price_version, run, tags, template, library_version, "
        "stream_status, first_chunk_ms, chunks FROM call_log"
    ),
}


def _set_0008(dialect: str) -> dict[str, str]:
    """0007's views, with the text columns on ``calls`` and ``cached_answers`` (per engine)."""
    texts = textviews.views(dialect)
    same = VIEW_SETS["0007"]
    assert isinstance(same, Mapping)
    return {
        "calls": texts["calls"],
        "daily_usage": same["daily_usage"],
        "model_costs": same["model_costs"],
        "cached_answers": texts["cached_answers"],
    }


# Migration 0008: system_prompt, prompt, answer, finish_reason (llm_ledger/store/textviews.py).
VIEW_SETS["0008"] = _set_0008


def views_for(revision: str, dialect: str) -> Mapping[str, str]:
    """The views of ``revision``'s set as ``dialect`` creates them."""
    found = VIEW_SETS[revision]
    return found(dialect) if callable(found) else found


class ViewSetError(RuntimeError):
    """A view set does not fit the tables it reads (a migration bug, caught while migrating)."""


def drop_views(names: list[str] | None = None, *, operations: Any = None) -> None:
    """Drop the named views (default: every view of every set), if they exist."""
    ops = operations or op
    every = {name for revision in VIEW_SETS for name in views_for(revision, "sqlite")}
    for name in reversed(sorted(every) if names is None else names):
        ops.execute(f"DROP VIEW IF EXISTS {name}")


def create_views(views: ViewSet, *, operations: Any = None) -> None:
    """Create each view from its SELECT, in order, after checking ``calls`` covers call_log."""
    ops = operations or op
    if callable(views):
        views = views(ops.get_bind().dialect.name)
    _check_calls(views, ops)
    for name, select in views.items():
        ops.execute(f"CREATE VIEW {name} AS {select}")


@contextlib.contextmanager
def rebuilt_views(revision: str, *, operations: Any = None) -> Iterator[None]:
    """Every view dropped for the block, then :data:`VIEW_SETS` ``[revision]`` created.

    ``operations``: an :class:`alembic.operations.Operations` (default: the running
    migration's ``op``).
    """
    if revision not in VIEW_SETS:
        raise ViewSetError(
            f"no view set for revision {revision!r}: add VIEW_SETS[{revision!r}] to "
            f"llm_ledger/store/viewsets.py (known: {', '.join(VIEW_SETS)})"
        )
    drop_views(operations=operations)
    yield
    create_views(VIEW_SETS[revision], operations=operations)


def _check_calls(views: Mapping[str, str], ops: Any) -> None:
    """The columns the ``calls`` SELECT yields (asked of the database, not parsed from the
    SQL, which may hold subqueries and commas of its own) cover call_log's."""
    select = views.get("calls")
    if select is None:
        return
    result = ops.get_bind().execute(text(f"SELECT * FROM ({select}) AS v WHERE 1 = 0"))
    selected = {name.lower() for name in result.keys()}
    result.close()
    columns = [c["name"] for c in inspect(ops.get_bind()).get_columns("call_log")]
    missing = [c for c in columns if c.lower() not in selected]
    if missing:
        raise ViewSetError(
            f"call_log has column(s) {', '.join(missing)} that the calls view of this view "
            "set does not select: add them to its calls view in llm_ledger/store/viewsets.py"
        )
