"""Ledgers written by past schema revisions open with today's code, every row intact.

tests/fixtures/ledger_0001.db and ledger_0002.db were written by the llm_ledger of the
commits where 0001 and 0002 were the newest migrations (tests/fixtures/make_old_ledger.py
says how): real calls through the test-kit server (the requests-cache pattern).
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import llm_ledger
from llm_ledger import reports, transfer
from llm_ledger.store import db
from llm_ledger.store.models import TABLES
from llm_ledger.testing import FakeOpenAIServer

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ROWS = {"requests": 9, "responses": 9, "cache_entries": 8, "call_log": 12, "call_tags": 2}
HELLO = [{"role": "user", "content": "Bonjour, ça va ? Réponds en une phrase."}]
PICK = [{"role": "user", "content": "Pick a number between 1 and 10."}]


def dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every ledger table, as SQLite stores it, in key order."""
    llm_ledger.flush()  # calls are written behind them (writes="journal")
    conn = sqlite3.connect(path)
    try:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in TABLES}
    finally:
        conn.close()


def revision_of(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    finally:
        conn.close()


@pytest.fixture(params=["0001", "0002"])
def saved(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    path = tmp_path / "ledger.db"
    shutil.copyfile(FIXTURES / f"ledger_{request.param}.db", path)
    assert revision_of(path) == request.param
    return path


def test_every_row_of_a_saved_ledger_survives_the_upgrade(saved: Path) -> None:
    before = dump(saved)
    assert {t: len(rows) for t, rows in before.items()} == ROWS

    llm_ledger.Ledger(str(saved)).close()

    assert revision_of(saved) == db.head_revision()
    # Columns added since (0007: stream_status, first_chunk_ms, chunks) are NULL on old rows.
    added: dict[str, tuple[Any, ...]] = {"call_log": (None, None, None)}
    assert dump(saved) == {
        t: [row + added.get(t, ()) for row in rows] for t, rows in before.items()
    }


def test_a_saved_ledger_replays_its_answers_after_the_upgrade(
    saved: Path, api: FakeOpenAIServer
) -> None:
    stored = {
        slot: text
        for slot, text in sqlite3.connect(saved).execute(
            "SELECT e.slot, json_extract(r.response, '$.choices[0].message.content') "
            "FROM cache_entries e JOIN responses r ON r.id = e.response_id "
            "JOIN requests q ON q.request_hash = e.request_hash "
            "WHERE json_extract(q.request, '$.messages[0].content') = ?",
            (PICK[0]["content"],),
        )
    }
    replayer = llm_ledger.OpenAIClient(cache_file_name=str(saved), mode="replay")

    answers = [replayer.send_message(PICK, temperature=1.0)["content"] for _ in range(3)]
    hello = replayer.send_message(HELLO, temperature=0)

    assert answers == [stored[0], stored[1], stored[2]]
    assert hello is not None and hello["content"].endswith(
        "Bonjour, ça va ? Réponds en une phrase."
    )
    assert api.request_count == 0


def test_a_saved_ledger_reports_and_exports_after_the_upgrade(saved: Path, tmp_path: Path) -> None:
    spent = sqlite3.connect(saved).execute("SELECT SUM(cost_usd) FROM call_log").fetchone()[0]
    ledger = llm_ledger.Ledger(str(saved))
    try:
        rows = reports.costs(ledger, "model")
        result = transfer.export_bundle(ledger, tmp_path / "old.jsonl")
    finally:
        ledger.close()
    assert [r["group"] for r in rows] == ["gpt-4o-mini", "text-embedding-3-small"]
    assert float(sum(r["cost_usd"] for r in rows)) == pytest.approx(spent, abs=1e-12)
    assert result["counts"] == {"requests": 9, "responses": 9, "cache_entries": 8, "calls": 12}
    imported = transfer.import_bundle(str(tmp_path / "copy.db"), tmp_path / "old.jsonl")
    assert (imported["added"], imported["refused"]) == (38, 0)
