"""hit_audit="background": hits queue their audit rows; a daemon thread writes them in batches."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import llm_ledger
from llm_ledger import config, reports
from llm_ledger.errors import ConfigError
from llm_ledger.store import repository, statements

from .conftest import msgs, wait_for

# hit_audit="background" is the journal for hit rows only, under writes="sync".
pytestmark = pytest.mark.usefixtures("sync_writes")


def _calls(path: Path) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT cache_status, status, response_id, prompt_tokens, saved_usd IS NOT NULL "
            "FROM call_log ORDER BY created_at, id"
        ).fetchall()
    finally:
        conn.close()


@pytest.fixture
def background() -> None:
    config.set_default("hit_audit", "background")


def test_hits_are_written_by_the_background_thread(client, api, db_path, background) -> None:
    client.send_message(msgs("q"), temperature=0)  # a miss: written before it returns
    assert _calls(db_path) == [("miss", "ok", 1, 4, 0)]
    for _ in range(20):
        assert client.send_message(msgs("q"), temperature=0)["content"] == "answer 1 to: q"
    assert api.chat_count == 1
    writer = client.ledger._writer
    assert writer is not None
    assert wait_for(lambda: len(_calls(db_path)) == 21)
    assert _calls(db_path) == [("miss", "ok", 1, 4, 0)] + [("hit", "ok", 1, 4, 1)] * 20
    assert writer.written == 20 and writer.pending() == 0
    assert writer._thread is not None and writer._thread.name.startswith("llm-ledger-writer")


def test_sync_is_the_default_and_bad_values_are_refused(client, api, db_path) -> None:
    assert config.settings().hit_audit == "sync"
    client.send_message(msgs("q"), temperature=0)
    client.send_message(msgs("q"), temperature=0)
    assert len(_calls(db_path)) == 2  # committed before send_message returned
    assert client.ledger._writer is None
    with pytest.raises(ConfigError, match="hit_audit='later': must be one of sync, background"):
        config.set_default("hit_audit", "later")
    with pytest.raises(ConfigError, match="LLM_LEDGER_HIT_AUDIT='x'"):
        config.Settings.from_env({"LLM_LEDGER_HIT_AUDIT": "x"})


def test_reports_and_close_write_the_queue_first(client, api, db_path, background) -> None:
    client.send_message(msgs("q"), temperature=0)
    ledger = client.ledger
    writer = ledger._record_writer()
    writer.interval = 3600  # the thread would wait an hour
    for _ in range(5):
        client.send_message(msgs("q"), temperature=0)
    assert writer.pending() == 5 and len(_calls(db_path)) == 1
    [row] = reports.costs(ledger, by="model")
    assert (row["calls"], row["hits"]) == (6, 5)
    assert writer.pending() == 0
    client.send_message(msgs("q"), temperature=0)
    assert writer.pending() == 1
    repository.close_all()
    assert [r[0] for r in _calls(db_path)] == ["miss"] + ["hit"] * 6


def test_a_refused_batch_is_written_row_by_row_and_the_rest_spooled(
    client, api, db_path, background, tmp_path, monkeypatch
) -> None:
    client.send_message(msgs("q"), temperature=0)
    ledger = client.ledger
    real = statements.CallInsert.record_params
    calls = {"n": 0}

    def flaky(self, rec, response_id):  # type: ignore[no-untyped-def]
        calls["n"] += 1  # one per audit row made, in the batch or alone
        if calls["n"] in (2, 4):  # the batch's second row, then the same row alone
            raise sqlite3.OperationalError("disk I/O error")
        return real(self, rec, response_id)

    monkeypatch.setattr(statements.CallInsert, "record_params", flaky)
    ledger._record_writer().interval = 3600
    for _ in range(3):
        client.send_message(msgs("q"), temperature=0)
    ledger.flush()
    monkeypatch.undo()
    # Three hits: the batch failed, then rows 1 and 3 went in alone and row 2 was spooled.
    assert [r[0] for r in _calls(db_path)] == ["miss", "hit", "hit"]
    assert ledger.spool_path.exists()
    assert ledger.recover()["written"] == 1
    assert [r[0] for r in _calls(db_path)] == ["miss", "hit", "hit", "hit"]


def test_queued_rows_are_written_at_interpreter_exit(api, tmp_path) -> None:
    db = tmp_path / "exit.db"
    code = f"""
import llm_ledger
from llm_ledger import config
config.set_default("writes", "sync")
config.set_default("hit_audit", "background")
c = llm_ledger.OpenAIClient(cache_file_name={str(db)!r})
c.send_message([{{"role": "user", "content": "q"}}], temperature=0)
c.ledger._record_writer().interval = 3600  # only the exit can write them
for _ in range(10):
    c.send_message([{{"role": "user", "content": "q"}}], temperature=0)
assert c.ledger._writer.pending() == 10
"""
    env = {
        "PATH": "/usr/bin:/bin",
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": api.url,
    }
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)
    assert [r[0] for r in _calls(db)] == ["miss"] + ["hit"] * 10


def test_background_hits_on_each_engine(any_db, api, background) -> None:
    from sqlalchemy import func, select

    from llm_ledger.store.models import CallLog

    c = llm_ledger.OpenAIClient(cache_file_name=any_db)
    for _ in range(6):
        c.send_message(msgs("q"), temperature=0)
    c.ledger.flush()
    with c.ledger.engine.connect() as conn:
        got = conn.execute(
            select(CallLog.cache_status, func.count()).group_by(CallLog.cache_status)
        ).all()
    assert sorted(tuple(r) for r in got) == [("hit", 5), ("miss", 1)]


def test_an_export_of_the_open_ledger_includes_queued_hit_rows(
    client, api, db_path, background, tmp_path
) -> None:
    from llm_ledger import transfer

    client.send_message(msgs("q"), temperature=0)
    ledger = client.ledger
    ledger._record_writer().interval = 3600
    for _ in range(3):
        client.send_message(msgs("q"), temperature=0)
    assert ledger._writer.pending() == 3
    result = transfer.export_bundle(ledger, tmp_path / "out.jsonl.gz")
    assert result["counts"]["calls"] == 4
