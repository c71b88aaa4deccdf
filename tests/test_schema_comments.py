"""Column meanings live on the columns: COMMENT on PostgreSQL and MariaDB; views rebuilt per revision."""

from __future__ import annotations

import importlib.util
import re

import pytest
import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import inspect, text

from llm_ledger.store import db, viewsets
from llm_ledger.store.models import Base

MODEL_COMMENTS = {
    (t.name, c.name): c.comment for t in Base.metadata.sorted_tables for c in t.columns
}


# The view set a ledger at head has (the newest one).
HEAD_VIEWS = "0008"


def _migrated(url: str, revision: str = "head") -> sa.Engine:
    engine = db.make_engine(url)
    db.upgrade(engine, revision)
    return engine


def test_every_table_column_carries_its_meaning() -> None:
    assert [k for k, comment in MODEL_COMMENTS.items() if not comment] == []


@pytest.mark.parametrize("server", ["pg_url", "mysql_url"])
def test_the_server_keeps_each_meaning_as_the_column_comment(
    server: str, request: pytest.FixtureRequest
) -> None:
    engine = _migrated(request.getfixturevalue(server))
    try:
        insp = inspect(engine)
        found = {
            (t, c["name"]): c.get("comment")
            for t in {t for t, _ in MODEL_COMMENTS}
            for c in insp.get_columns(t)
        }
    finally:
        engine.dispose()
    assert found == MODEL_COMMENTS


def test_psql_style_catalog_query_shows_the_comment(pg_url: str) -> None:
    engine = _migrated(pg_url)
    try:
        with engine.connect() as conn:
            comment = conn.execute(
                text("SELECT col_description('call_log'::regclass, 18)")
            ).scalar_one()
            name = conn.execute(
                text(
                    "SELECT attname FROM pg_attribute "
                    "WHERE attrelid = 'call_log'::regclass AND attnum = 18"
                )
            ).scalar_one()
    finally:
        engine.dispose()
    assert comment == MODEL_COMMENTS[("call_log", name)]


def _create_statements(engine: sa.Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return {
            t: conn.execute(text(f"SHOW CREATE TABLE {t}")).one()[1]
            for t in ("requests", "responses", "cache_entries", "call_log", "call_tags")
        }


def test_0004_changes_nothing_on_mariadb_but_the_comments(mysql_url: str) -> None:
    engine = _migrated(mysql_url, "0006")
    try:
        before = _create_statements(engine)
        db.upgrade(engine, "0004")
        after = _create_statements(engine)
        db.downgrade(engine, "0006")
        again = _create_statements(engine)
    finally:
        engine.dispose()
    stripped = {t: re.sub(r" COMMENT '(?:[^']|'')*'", "", sql) for t, sql in after.items()}
    assert stripped == before
    assert after != before
    assert again == before


def test_the_calls_view_selects_every_call_log_column(any_db: str) -> None:
    engine = _migrated(any_db)
    try:
        insp = inspect(engine)
        view = [c["name"] for c in insp.get_columns("calls")]
        table = [c["name"] for c in insp.get_columns("call_log")]
    finally:
        engine.dispose()
    # Every call_log column, and (from 0008) the four texts read from the request/response.
    assert sorted(view) == sorted([*table, "system_prompt", "prompt", "answer", "finish_reason"])


def test_view_set_0001_is_what_migration_0001_creates() -> None:
    path = db.migrations_dir() / "versions" / "0001_initial_ledger_schema.py"
    spec = importlib.util.spec_from_file_location("_m0001", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert viewsets.VIEW_SETS["0001"] == module.VIEWS


def _ops(conn: sa.Connection) -> Operations:
    return Operations(MigrationContext.configure(conn))


def test_rebuilt_views_refuses_a_view_set_whose_calls_misses_a_new_column(any_db: str) -> None:
    engine = _migrated(any_db)
    try:
        with engine.begin() as conn:
            ops = _ops(conn)
            with pytest.raises(viewsets.ViewSetError) as err:
                with viewsets.rebuilt_views(HEAD_VIEWS, operations=ops):
                    ops.add_column("call_log", sa.Column("prompt_text", sa.Text(), nullable=True))
    finally:
        engine.dispose()
    assert str(err.value) == (
        "call_log has column(s) prompt_text that the calls view of this view set does not "
        "select: add them to its calls view in llm_ledger/store/viewsets.py"
    )


def test_rebuilt_views_checks_a_per_engine_set_with_subqueries(any_db: str) -> None:
    """Set 0008's calls reads its texts through subqueries (commas and FROMs of their own):
    its columns are asked of the database, so a new call_log column is still caught."""
    engine = _migrated(any_db)
    try:
        with engine.begin() as conn:
            ops = _ops(conn)
            with pytest.raises(viewsets.ViewSetError) as err:
                with viewsets.rebuilt_views("0008", operations=ops):
                    ops.add_column("call_log", sa.Column("stream_chunks", sa.Integer()))
    finally:
        engine.dispose()
    assert str(err.value) == (
        "call_log has column(s) stream_chunks that the calls view of this view set does not "
        "select: add them to its calls view in llm_ledger/store/viewsets.py"
    )


def test_rebuilt_views_creates_the_revisions_views_again(any_db: str) -> None:
    engine = _migrated(any_db)
    try:
        before = {
            v: [c["name"] for c in inspect(engine).get_columns(v)]
            for v in viewsets.views_for(HEAD_VIEWS, engine.dialect.name)
        }
        with engine.begin() as conn:
            with viewsets.rebuilt_views(HEAD_VIEWS, operations=_ops(conn)):
                assert set(inspect(conn).get_view_names()) & set(before) == set()
        after = {v: [c["name"] for c in inspect(engine).get_columns(v)] for v in before}
    finally:
        engine.dispose()
    assert after == before


def test_rebuilt_views_names_a_missing_view_set() -> None:
    with pytest.raises(viewsets.ViewSetError, match=r"no view set for revision '0099'"):
        with viewsets.rebuilt_views("0099"):
            pass
