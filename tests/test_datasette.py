"""llm-ledger datasette-metadata: descriptions for every column, search, canned queries that run."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from typer.testing import CliRunner

import llm_ledger
from llm_ledger import datasette
from llm_ledger.cli import app
from llm_ledger.store import schema_doc

from .analyst_ledger import build


def _metadata(db_path: Path) -> dict:
    result = CliRunner().invoke(app, ["--db", str(db_path), "datasette-metadata"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_metadata_describes_every_column_of_every_table_and_view(db_path: Path) -> None:
    build(str(db_path)).close()
    meta = _metadata(db_path)
    assert list(meta["databases"]) == ["ledger"]  # Datasette's name for ledger.db
    tables = meta["databases"]["ledger"]["tables"]
    views, _ = schema_doc.migrated_views()
    want = [t.name for t in schema_doc.tables()] + [v.name for v in views]
    assert list(tables) == want
    empty = [f"{t}.{c}" for t, spec in tables.items() for c, d in spec["columns"].items() if not d]
    assert empty == []
    assert tables["calls"]["columns"]["prompt"] == schema_doc.describe("calls", "prompt")
    assert tables["calls"]["columns"]["cost_usd"] == schema_doc.describe("call_log", "cost_usd")
    assert tables["responses"]["fts_table"] == "answer_search"
    assert tables["responses"]["fts_pk"] == "id"


def test_metadata_of_a_server_ledger_needs_a_name() -> None:
    url = "postgresql://app@db.invalid/ledger"
    result = CliRunner().invoke(app, ["--db", url, "datasette-metadata"])
    assert result.exit_code == 2
    assert "give --name" in result.output
    result = CliRunner().invoke(app, ["--db", url, "datasette-metadata", "--name", "prod"])
    assert list(json.loads(result.output)["databases"]) == ["prod"]


def test_every_canned_query_runs_on_a_ledger_and_answers_its_question(db_path: Path) -> None:
    build(str(db_path)).close()
    llm_ledger.flush()  # writes="journal": this process's calls into the tables first
    conn = sqlite3.connect(db_path)
    try:

        def run(name: str, **params: str) -> list[tuple]:
            return conn.execute(datasette.CANNED_QUERIES[name]["sql"], params).fetchall()

        assert run("spend_per_day") == [
            ("2026-05-03", 3, 0, 0.00401, None),
            ("2026-05-02", 2, 0, 0.0021, None),
            ("2026-05-01", 2, 1, 0.0003, 0.0003),
        ]
        assert [r[:4] for r in run("hit_rate_per_model")] == [
            ("gpt-4o-mini", 4, 1, 0.25),
            ("gpt-4o", 2, 0, 0.0),
            ("text-embedding-3-small", 1, 0, 0.0),
        ]
        assert [r[0] for r in run("slowest_calls")] == [7, 3, 1, 4, 5, 6]
        assert [r[:3] + r[4:] for r in run("failures")] == [
            ("error", "APIConnectionError", 1, "connection refused"),
            ("refused", None, 1, None),
        ]
        assert [r[:4] for r in run("expensive_runs")] == [
            ("tools", 1, 0, 0.002),
            ("geo", 2, 1, 0.0003),
        ]
        assert [r[0] for r in run("search", text="capital")] == [2, 1]
    finally:
        conn.close()
