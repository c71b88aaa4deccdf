"""The Alembic history on SQLite, PostgreSQL and MariaDB; the calls relation; schema checks at open."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text

import llm_ledger
from llm_ledger import db
from llm_ledger.models import VIEW_NAMES

CALLS_COLUMNS = {
    "id",
    "created_at",
    "kind",
    "api_type",
    "model",
    "request_hash",
    "cache_status",
    "status",
    "attempts",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "total_tokens",
    "error_type",
    "cost_usd",
    "saved_usd",
    "run",
    "tags",
    "template",
}
TABLES = {"requests", "responses", "cache_entries", "call_log", "call_tags", "alembic_version"}


def test_upgrade_downgrade_upgrade_on_each_engine(any_db: str) -> None:
    engine = db.make_engine(any_db)
    try:
        assert db.upgrade(engine) == (None, db.head_revision())
        insp = inspect(engine)
        assert TABLES <= set(insp.get_table_names())
        assert set(VIEW_NAMES) <= set(insp.get_view_names())
        db.downgrade(engine, "base")
        insp = inspect(engine)
        assert set(insp.get_table_names()) & (TABLES - {"alembic_version"}) == set()
        assert set(insp.get_view_names()) & set(VIEW_NAMES) == set()
        assert db.upgrade(engine) == (None, db.head_revision())
        with engine.connect() as conn:
            assert db.current_revision(conn) == db.head_revision()
    finally:
        engine.dispose()


def test_calls_relation_has_the_documented_columns(any_db: str) -> None:
    ledger = llm_ledger.Ledger(any_db)
    try:
        cols = {c["name"] for c in inspect(ledger.engine).get_columns("calls")}
        assert CALLS_COLUMNS <= cols
    finally:
        ledger.close()


def test_calls_view_returns_recorded_calls_on_each_engine(api, any_db: str) -> None:
    c = llm_ledger.OpenAIClient(cache_file_name=any_db)
    c.send_message([{"role": "user", "content": "hi"}], temperature=0)
    c.send_message([{"role": "user", "content": "hi"}], temperature=0)
    with c.ledger.engine.connect() as conn:
        got = [
            tuple(r)
            for r in conn.execute(
                text(
                    "SELECT kind, cache_status, status, attempts, prompt_tokens FROM calls ORDER BY id"
                )
            )
        ]
        daily = conn.execute(text("SELECT calls, hits FROM daily_usage")).one()
    assert got == [("chat", "miss", "ok", 1, 4), ("chat", "hit", "ok", 0, 4)]
    assert tuple(int(x) for x in daily) == (2, 1)


def test_new_sqlite_ledger_is_created_on_first_use(tmp_path) -> None:
    path = tmp_path / "sub" / "new.db"
    ledger = llm_ledger.Ledger(str(path))
    assert ledger.revision == db.head_revision()
    assert path.exists()
    ledger.close()


def test_server_ledger_with_newer_schema_is_refused(pg_url: str) -> None:
    engine = db.make_engine(pg_url)
    try:
        db.upgrade(engine)
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = 'ffffffff'"))
        with pytest.raises(
            llm_ledger.SchemaVersionError, match=r"newer llm_ledger.*pip install -U llm-ledger"
        ):
            llm_ledger.Ledger(pg_url)
    finally:
        engine.dispose()


def test_older_sqlite_ledger_is_upgraded_at_open(db_path) -> None:
    engine = db.make_engine(str(db_path))
    db.upgrade(engine, "0001")
    engine.dispose()
    ledger = llm_ledger.Ledger(str(db_path))
    try:
        assert ledger.revision == db.head_revision() != "0001"
        with ledger.engine.connect() as conn:
            assert db.current_revision(conn) == db.head_revision()
    finally:
        ledger.close()


@pytest.mark.parametrize("server", ["pg_url", "mysql_url"])
def test_older_server_ledger_names_the_migrate_command(server: str, request) -> None:
    url = request.getfixturevalue(server)
    engine = db.make_engine(url)
    try:
        db.upgrade(engine, "0001")
        where = db.describe(db.normalize_url(url))
        with pytest.raises(llm_ledger.SchemaVersionError) as info:
            llm_ledger.Ledger(url)
        assert str(info.value) == (
            f"{where} has schema revision 0001, older than this code's {db.head_revision()}; "
            f"run `llm-ledger --db '{where}' migrate` (or `alembic -x url=... upgrade head`)"
        )
        assert db.upgrade(engine) == ("0001", db.head_revision())
        llm_ledger.Ledger(url).close()
    finally:
        engine.dispose()
