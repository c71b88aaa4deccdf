"""prune and vacuum: exactly what goes, on every engine; a dry run changes nothing."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

import llm_ledger
from llm_ledger import bulk
from llm_ledger.cli import app
from llm_ledger.store import db
from llm_ledger.store.models import Base
from llm_ledger.testing import FakeOpenAIServer

from .conftest import msgs
from .test_transfer import counts, digest

OLD = datetime(2020, 1, 1)
BEFORE = datetime(2025, 1, 1)


def ask(client: llm_ledger.OpenAIClient, text: str, **kw: object) -> None:
    assert client.send_message(msgs(text), temperature=0, **kw)


def age_everything(location: str) -> None:
    """Move every row's timestamps to 2020."""
    tables = Base.metadata.tables
    llm_ledger.flush()  # writes="journal": this process's calls into the tables first
    engine = db.make_engine(location)
    with engine.begin() as conn:
        conn.execute(update(tables["requests"]).values(created_at=OLD))
        conn.execute(update(tables["responses"]).values(created_at=OLD))
        conn.execute(update(tables["cache_entries"]).values(created_at=OLD, updated_at=OLD))
        conn.execute(update(tables["call_log"]).values(created_at=OLD))
    engine.dispose()


@pytest.fixture
def ledger(any_db: str, api: FakeOpenAIServer) -> str:
    """2020: A, B, D (two tags) asked once; R asked, then refreshed (its first answer replaced).
    Now: B asked again (a hit on its 2020 answer) and C asked."""
    client = llm_ledger.OpenAIClient(cache_file_name=any_db)
    ask(client, "question A")
    ask(client, "question B")
    with llm_ledger.scope(tags={"team": "x", "step": "1"}):
        ask(client, "question D")
    ask(client, "question R")
    ask(client, "question R", mode="refresh")
    age_everything(any_db)
    ask(client, "question B")
    ask(client, "question C")
    assert counts(any_db) == {
        "requests": 5,
        "responses": 6,
        "cache_entries": 5,
        "call_log": 7,
        "call_tags": 2,
    }
    return any_db


# Without --keep-cache: the five 2020 audit rows and D's tags; the entries of A, D and R (old
# answers no remaining audit row refers to) and their answers, R's replaced one included, and
# their requests. B's 2020 answer stays: today's hit refers to it.
PRUNED = {"requests": 3, "responses": 4, "cache_entries": 3, "call_log": 5, "call_tags": 2}
# --keep-cache: the audit rows and tags; of the answers only R's replaced one, which nothing uses.
KEPT_CACHE = {"requests": 0, "responses": 1, "cache_entries": 0, "call_log": 5, "call_tags": 2}


def test_prune_deletes_old_audit_rows_and_answers_nothing_uses(
    ledger: str, api: FakeOpenAIServer
) -> None:
    result = bulk.prune(ledger, BEFORE)

    assert result["deleted"] == PRUNED
    assert counts(ledger) == {
        "requests": 2,
        "responses": 2,
        "cache_entries": 2,
        "call_log": 2,
        "call_tags": 0,
    }
    client = llm_ledger.OpenAIClient(cache_file_name=ledger)
    before = api.request_count
    ask(client, "question B")
    ask(client, "question C")
    assert api.request_count == before
    ask(client, "question A")
    assert api.request_count == before + 1


def test_prune_keep_cache_deletes_audit_rows_only(ledger: str, api: FakeOpenAIServer) -> None:
    result = bulk.prune(ledger, BEFORE, keep_cache=True)

    assert result["deleted"] == KEPT_CACHE
    assert counts(ledger) == {
        "requests": 5,
        "responses": 5,
        "cache_entries": 5,
        "call_log": 2,
        "call_tags": 0,
    }
    client = llm_ledger.OpenAIClient(cache_file_name=ledger)
    before = api.request_count
    for text in ("question A", "question B", "question C", "question D", "question R"):
        ask(client, text)
    assert api.request_count == before


@pytest.mark.parametrize(("keep_cache", "expected"), [(False, PRUNED), (True, KEPT_CACHE)])
def test_dry_run_reports_what_would_go_and_changes_nothing(
    ledger: str, keep_cache: bool, expected: dict[str, int]
) -> None:
    before = digest(ledger)

    result = bulk.prune(ledger, BEFORE, keep_cache=keep_cache, dry_run=True)

    assert result["deleted"] == expected
    assert result["dry_run"] is True
    assert digest(ledger) == before
    assert bulk.prune(ledger, BEFORE, keep_cache=keep_cache, batch_size=1)["deleted"] == expected


def test_prune_before_the_oldest_row_deletes_nothing(ledger: str) -> None:
    before = digest(ledger)
    assert bulk.prune(ledger, datetime(2019, 1, 1))["deleted"] == dict.fromkeys(bulk.TABLES, 0)
    assert digest(ledger) == before


def test_pruning_twice_deletes_nothing_the_second_time(ledger: str) -> None:
    bulk.prune(ledger, BEFORE)
    assert bulk.prune(ledger, BEFORE)["deleted"] == dict.fromkeys(bulk.TABLES, 0)


def test_cli_prune_dry_run_prints_counts_per_table(ledger: str) -> None:
    before = digest(ledger)

    result = CliRunner().invoke(
        app, ["--db", ledger, "prune", "--before", "2025-01-01", "--dry-run"]
    )

    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == (
        "dry run: 17 rows from before 2025-01-01 00:00:00 would go; nothing changed"
    )
    assert digest(ledger) == before
    rows = json.loads(
        CliRunner()
        .invoke(app, ["--db", ledger, "prune", "--before", "2025-01-01", "-f", "json"])
        .stdout
    )
    assert {r["table"]: r["deleted"] for r in rows} == PRUNED


def test_cli_prune_needs_a_readable_date(ledger: str) -> None:
    result = CliRunner().invoke(app, ["--db", ledger, "prune", "--before", "last year"])
    assert result.exit_code == 2
    assert result.output.startswith("error: --before: 'last year' is not a date")


def test_vacuum_reports_sizes_and_keeps_every_row(ledger: str) -> None:
    bulk.prune(ledger, BEFORE)
    before = digest(ledger)

    result = bulk.vacuum(ledger)

    llm_ledger.flush()  # writes="journal": this process's calls into the tables first
    assert result["engine"] == db.make_engine(ledger).dialect.name
    assert isinstance(result["bytes_before"], int) and isinstance(result["bytes_after"], int)
    assert result["bytes_after"] > 0
    assert digest(ledger) == before


def test_cli_vacuum(ledger: str) -> None:
    result = CliRunner().invoke(app, ["--db", ledger, "vacuum", "-f", "json"])
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)
    assert set(row) == {"database", "engine", "bytes_before", "bytes_after"}
