"""Datasette metadata for a SQLite ledger: column descriptions and canned queries.

``llm-ledger datasette-metadata > metadata.json`` then
``datasette llm_ledger.db -m metadata.json``: every table and view shows what its columns
mean (the descriptions of docs/schema.md, from llm_ledger.store.schema_doc), the ``responses``
table gets a search box over the full-text index of migration 0008, and the canned
queries below answer the usual questions. Datasette reads SQLite only; the queries are
SQLite SQL (the views they read exist on every engine, so most run as-is elsewhere).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._version import __version__
from .store import schema_doc

__all__ = ["CANNED_QUERIES", "metadata"]

CANNED_QUERIES: dict[str, dict[str, str]] = {
    "spend_per_day": {
        "title": "Spend and savings per day",
        "description": "What the API was paid (hits cost nothing) and what the cache saved, "
        "per UTC day, newest first.",
        "sql": "SELECT day, SUM(calls) AS calls, SUM(hits) AS hits, "
        "ROUND(SUM(cost_usd), 6) AS spent_usd, ROUND(SUM(saved_usd), 6) AS saved_usd "
        "FROM daily_usage GROUP BY day ORDER BY day DESC",
    },
    "hit_rate_per_model": {
        "title": "Cache hit rate per model",
        "description": "Calls, hits and the share of calls the cache answered, per model.",
        "sql": "SELECT model, calls, hits, ROUND(1.0 * hits / calls, 4) AS hit_rate, "
        "ROUND(cost_usd, 6) AS cost_usd, ROUND(saved_usd, 6) AS saved_usd "
        "FROM model_costs ORDER BY calls DESC, model",
    },
    "slowest_calls": {
        "title": "Slowest calls",
        "description": "The 50 slowest calls that went to the API (hits left out), with "
        "their prompt and answer.",
        # The ids first, on call_log: sorting the view would compute every row's texts.
        "sql": "SELECT id, created_at, model, ROUND(latency_ms) AS latency_ms, cache_status, "
        "status, prompt, answer FROM calls WHERE id IN (SELECT id FROM call_log "
        "WHERE cache_status <> 'hit' AND latency_ms IS NOT NULL "
        "ORDER BY latency_ms DESC LIMIT 50) ORDER BY latency_ms DESC, id DESC",
    },
    "failures": {
        "title": "Failures and why",
        "description": "Calls that failed or were refused, by status and error type, with "
        "the last time it happened and one message.",
        "sql": "SELECT status, error_type, COUNT(*) AS calls, MAX(created_at) AS last_seen, "
        "MAX(error_message) AS example_message FROM calls WHERE status <> 'ok' "
        "GROUP BY status, error_type ORDER BY calls DESC, status, error_type",
    },
    "expensive_runs": {
        "title": "Most expensive runs",
        "description": "Runs (scope(run=...)) by what they cost, with their savings and "
        "when they started and ended.",
        "sql": "SELECT run, COUNT(*) AS calls, "
        "SUM(CASE WHEN cache_status = 'hit' THEN 1 ELSE 0 END) AS hits, "
        "ROUND(SUM(cost_usd), 6) AS cost_usd, ROUND(SUM(saved_usd), 6) AS saved_usd, "
        "MIN(created_at) AS started, MAX(created_at) AS ended FROM call_log "
        "WHERE run IS NOT NULL GROUP BY run ORDER BY SUM(cost_usd) DESC LIMIT 50",
    },
    "search": {
        "title": "Search prompts and answers",
        "description": "Calls whose prompt or answer matches an FTS5 query (words, "
        '"a phrase", prefix*, answer:word), newest first.',
        "sql": "SELECT id, created_at, model, cache_status, prompt, answer FROM calls "
        "WHERE id IN (SELECT call_log.id FROM call_log JOIN answer_search "
        "ON answer_search.rowid = call_log.response_id WHERE answer_search MATCH :text "
        "ORDER BY call_log.created_at DESC, call_log.id DESC LIMIT 100) "
        "ORDER BY created_at DESC, id DESC",
    },
}


def metadata(database: str) -> dict[str, Any]:
    """Datasette's metadata for a ledger opened as database ``database`` (its file stem)."""
    views, _ = schema_doc.migrated_views()
    tables: dict[str, Any] = {}
    for table in schema_doc.tables():
        tables[table.name] = {
            "description": " ".join(schema_doc._table_doc(table).split()),
            "columns": {
                c.name: schema_doc.describe(table.name, c.name) or "" for c in table.columns
            },
        }
    for view in views:
        tables[view.name] = {
            "description": schema_doc.VIEWS.get(view.name, ""),
            "columns": {c: schema_doc.describe(view.name, c) or "" for c in view.columns},
        }
    tables["responses"].update({"fts_table": "answer_search", "fts_pk": "id"})
    return {
        "title": "llm_ledger",
        "description": "The cache and audit log of OpenAI calls made through llm_ledger "
        f"{__version__}. Column meanings: hover a column, or see docs/schema.md.",
        "databases": {database: {"tables": tables, "queries": CANNED_QUERIES}},
    }


def database_name(path: str | Path) -> str:
    """The name Datasette gives a database file: its name without the extension."""
    return Path(path).stem
