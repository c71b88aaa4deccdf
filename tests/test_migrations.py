"""The Alembic history on SQLite, PostgreSQL and MariaDB; the calls relation; schema checks at open."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text

import llm_ledger
from llm_ledger.store import db
from llm_ledger.store.models import VIEW_NAMES

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


def _index_sql(engine, name: str) -> str:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            sql = "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :n"
        elif engine.dialect.name == "postgresql":
            sql = "SELECT indexdef FROM pg_indexes WHERE indexname = :n"
        else:
            sql = (
                "SELECT GROUP_CONCAT(column_name ORDER BY seq_in_index) FROM "
                "information_schema.statistics WHERE table_schema = DATABASE() AND index_name = :n"
            )
        return conn.execute(text(sql), {"n": name}).scalar_one()


def test_0003_makes_three_report_indexes_partial_where_the_engine_can(any_db: str) -> None:
    engine = db.make_engine(any_db)
    try:
        db.upgrade(engine, "0002")
        assert "WHERE" not in _index_sql(engine, "ix_call_log_model_latency").upper()
        db.upgrade(engine)
        latency = _index_sql(engine, "ix_call_log_model_latency")
        by_run = _index_sql(engine, "ix_call_log_costs_by_run")
        by_template = _index_sql(engine, "ix_call_log_costs_by_template")
        if engine.dialect.name == "sqlite":
            assert latency.endswith("WHERE cache_status <> 'hit'")
            assert by_run.endswith("WHERE run IS NOT NULL")
            assert by_template.endswith("WHERE template IS NOT NULL")
        elif engine.dialect.name == "postgresql":
            assert latency.endswith("WHERE ((cache_status)::text <> 'hit'::text)")
            assert by_run.endswith("WHERE (run IS NOT NULL)")
            assert by_template.endswith("WHERE (template IS NOT NULL)")
        else:  # MariaDB has no partial indexes: 0002's stay as they were
            assert latency == "model,latency_ms,status,cache_status,created_at"
            assert by_run.startswith("run,created_at,")
        db.downgrade(engine, "0002")
        assert "WHERE" not in _index_sql(engine, "ix_call_log_model_latency").upper()
        assert "WHERE" not in _index_sql(engine, "ix_call_log_costs_by_run").upper()
    finally:
        engine.dispose()
