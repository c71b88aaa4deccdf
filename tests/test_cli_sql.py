"""``llm-ledger sql``: one read-only statement, parameters, stdin; writes refused by the database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from typer.testing import CliRunner

import llm_ledger
from llm_ledger.cli import app
from llm_ledger.cli.sql import read_only, statements
from llm_ledger.store import db, repository

from .conftest import msgs
from .test_cli_core import known  # noqa: F401  (fixture)

TABLES = ("requests", "responses", "cache_entries", "call_log", "call_tags")
WRITES = [
    "INSERT INTO call_tags (call_id, name, value) VALUES (1, 'x', 'y')",
    "UPDATE call_log SET model = 'changed'",
    "DELETE FROM call_log",
    "DROP TABLE requests",
    "DROP VIEW calls",
    "CREATE TABLE sneaky (a INTEGER)",
    "SELECT 1; DROP TABLE requests",
    "COMMIT; DROP TABLE requests",
    "SELECT 1;\nDELETE FROM call_tags;",
]


def invoke(*args: str, input: str | None = None):
    return CliRunner().invoke(app, list(args), input=input)


def ledger_with_calls(location: str) -> str:
    """Two calls (a miss and its hit) on any engine, through the public API."""
    client = llm_ledger.OpenAIClient(cache_file_name=location)
    with llm_ledger.scope(run="r1", tags={"team": "alpha"}):
        client.send_message(msgs("What is the capital of France?"), temperature=0)
        client.send_message(msgs("What is the capital of France?"), temperature=0)
    repository.close_all()
    return location


READER_PASSWORD = "reader pw%"


def reader(location: str) -> str:
    """The URL of a SELECT-only login on a server ledger (``sql`` refuses a superuser)."""
    url = make_url(db.normalize_url(location))
    if url.get_backend_name() == "sqlite":
        return location
    result = CliRunner().invoke(
        app,
        ["--db", location, "grant-reader"],
        env={"LLM_LEDGER_READER_PASSWORD": READER_PASSWORD},
    )
    assert result.exit_code == 0, result.output
    name = f"{url.database}_reader"
    return url.set(username=name, password=READER_PASSWORD).render_as_string(hide_password=False)


def counts(location: str) -> dict[str, int]:
    llm_ledger.flush()  # calls are written behind them (writes="journal")
    engine = db.make_engine(location)
    with engine.connect() as conn:
        found = {t: conn.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar_one() for t in TABLES}
        found["views"] = conn.execute(text("SELECT COUNT(*) FROM calls")).scalar_one()
    engine.dispose()
    return found


# --- reading ------------------------------------------------------------------------


def test_sql_prints_a_table(known: str) -> None:  # noqa: F811
    result = invoke("--db", known, "sql", "SELECT id, model, cache_status FROM calls ORDER BY id")
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "┏━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━┓\n"
        "┃ id ┃ model                  ┃ cache_status ┃\n"
        "┡━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━┩\n"
        "│ 1  │ gpt-4o-mini            │ miss         │\n"
        "│ 2  │ gpt-4o-mini            │ hit          │\n"
        "│ 3  │ text-embedding-3-small │ miss         │\n"
        "│ 4  │ gpt-4o                 │ miss         │\n"
        "│ 5  │ gpt-4o-mini            │ miss         │\n"
        "└────┴────────────────────────┴──────────────┘\n"
    )


def test_sql_csv_and_json(known: str) -> None:  # noqa: F811
    query = "SELECT model, calls, hits, errors FROM model_costs ORDER BY model"
    csv = invoke("--db", known, "sql", query, "--format", "csv")
    assert (csv.exit_code, csv.stdout) == (
        0,
        "model,calls,hits,errors\ngpt-4o,1,0,1\ngpt-4o-mini,3,1,0\ntext-embedding-3-small,1,0,0\n",
    )
    as_json = invoke("--db", known, "sql", query, "-f", "json")
    assert json.loads(as_json.stdout) == [
        {"model": "gpt-4o", "calls": 1, "hits": 0, "errors": 1},
        {"model": "gpt-4o-mini", "calls": 3, "hits": 1, "errors": 0},
        {"model": "text-embedding-3-small", "calls": 1, "hits": 0, "errors": 0},
    ]


def test_sql_dash_reads_the_query_from_stdin(known: str) -> None:  # noqa: F811
    result = invoke(
        "--db", known, "sql", "-", "-f", "csv", input="SELECT COUNT(*) AS n\nFROM call_log\n"
    )
    assert (result.exit_code, result.stdout) == (0, "n\n5\n")


def test_sql_binds_p_parameters(known: str) -> None:  # noqa: F811
    query = "SELECT id FROM calls WHERE model = :model AND status = :status ORDER BY id"
    result = invoke(
        "--db", known, "sql", query, "-p", "model", "gpt-4o-mini", "-p", "status", "refused",
        "-f", "csv",
    )  # fmt: skip
    assert (result.exit_code, result.stdout) == (0, "id\n5\n")


def test_sql_parameter_values_are_never_sql(known: str) -> None:  # noqa: F811
    result = invoke(
        "--db", known, "sql", "SELECT :v AS v", "-p", "v", "x'; DROP TABLE requests; --",
        "-f", "json",
    )  # fmt: skip
    assert json.loads(result.stdout) == [{"v": "x'; DROP TABLE requests; --"}]
    assert counts(known)["requests"] == 6


def test_sql_a_missing_parameter_exits_2(known: str) -> None:  # noqa: F811
    result = invoke("--db", known, "sql", "SELECT id FROM calls WHERE model = :model")
    assert result.exit_code == 2
    assert result.stderr == "error: the query uses :model; give it a value with -p model VALUE\n"


def test_sql_an_unused_parameter_exits_2(known: str) -> None:  # noqa: F811
    result = invoke("--db", known, "sql", "SELECT 1 AS one", "-p", "model", "x")
    assert result.exit_code == 2
    assert result.stderr == "error: -p model: the query has no :model parameter\n"


def test_sql_p_needs_a_name_and_a_value(known: str) -> None:  # noqa: F811
    result = invoke("--db", known, "sql", "SELECT :a AS a", "-p", "a")
    assert result.exit_code == 2
    assert "expects two values: NAME VALUE" in result.stderr


def test_sql_semicolons_in_strings_and_comments_are_one_statement(known: str) -> None:  # noqa: F811
    result = invoke(
        "--db", known, "sql", "SELECT 'a;b' AS x, 2 AS x -- ; DROP TABLE requests\n;", "-f", "json"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [{"x": "a;b", "x_2": 2}]


def test_sql_statement_without_rows_prints_nothing(known: str) -> None:  # noqa: F811
    result = invoke("--db", known, "sql", "PRAGMA table_info(call_tags)", "-f", "csv")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "cid,name,type,notnull,dflt_value,pk"


# --- refusing writes ------------------------------------------------------------------


@pytest.mark.parametrize("query", WRITES)
def test_sql_refuses_writes_on_sqlite(known: str, query: str) -> None:  # noqa: F811
    before = counts(known)
    result = invoke("--db", known, "sql", query)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: read-only: "), result.stderr
    assert "Traceback" not in result.output
    assert counts(known) == before


@pytest.mark.parametrize("query", WRITES)
def test_sql_refuses_writes_on_postgresql(pg_url: str, api, query: str) -> None:
    location = ledger_with_calls(pg_url)
    before = counts(location)
    result = invoke("--db", reader(location), "sql", query)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: read-only: "), result.stderr
    assert counts(location) == before


@pytest.mark.parametrize("query", WRITES)
def test_sql_refuses_writes_on_mariadb(mysql_url: str, api, query: str) -> None:
    location = ledger_with_calls(mysql_url)
    before = counts(location)
    result = invoke("--db", reader(location), "sql", query)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: read-only: "), result.stderr
    assert counts(location) == before


def test_sql_reads_on_every_engine(any_db: str, api) -> None:
    location = ledger_with_calls(any_db)
    result = invoke(
        "--db", reader(location), "sql",
        "SELECT cache_status, COUNT(*) AS n FROM calls WHERE run = :run "
        "GROUP BY cache_status ORDER BY cache_status",
        "-p", "run", "r1", "-f", "csv",
    )  # fmt: skip
    assert (result.exit_code, result.stdout) == (0, "cache_status,n\nhit,1\nmiss,1\n")


@pytest.mark.parametrize(
    "query", ["COMMIT; DROP TABLE call_tags", "SELECT 1; DELETE FROM call_tags"]
)
def test_the_database_itself_refuses_a_second_statement(any_db: str, api, query: str) -> None:
    """Below the statement splitter: the read-only connection runs one statement at most."""
    location = ledger_with_calls(any_db)
    before = counts(location)
    with read_only(location) as conn, pytest.raises(DBAPIError):
        conn.execute(text(query))
    assert counts(location) == before


def test_the_database_itself_refuses_a_write(any_db: str, api) -> None:
    location = ledger_with_calls(any_db)
    with read_only(location) as conn, pytest.raises(DBAPIError):
        conn.execute(text("DELETE FROM call_tags"))
    assert counts(location)["call_tags"] == 2


def test_sqlite_attach_is_refused_and_creates_no_file(known: str, tmp_path: Path) -> None:  # noqa: F811
    target = tmp_path / "elsewhere.db"
    result = invoke("--db", known, "sql", f"ATTACH 'file:{target}?mode=rwc' AS x")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: read-only: `llm-ledger sql` does not change the ledger; the database refused "
        f"this ATTACH statement (not authorized: ATTACH file:{target}?mode=rwc)\n"
    )
    assert not target.exists()


def test_sqlite_settings_pragma_is_refused(known: str) -> None:  # noqa: F811
    result = invoke("--db", known, "sql", "PRAGMA query_only = OFF")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: read-only: ")
    assert result.stderr.endswith("(not authorized: PRAGMA query_only = OFF)\n")


def test_postgresql_copy_is_refused(pg_url: str, api) -> None:
    location = ledger_with_calls(pg_url)
    result = invoke(
        "--db", reader(location), "sql", "COPY (SELECT 1) TO '/tmp/llm_ledger_copy_test'"
    )
    assert result.exit_code == 2
    assert result.stderr == (
        "error: read-only: COPY is not allowed (it can write files on the server); "
        "use --format csv\n"
    )


def test_mariadb_into_outfile_is_refused(mysql_url: str, api) -> None:
    location = ledger_with_calls(mysql_url)
    result = invoke("--db", reader(location), "sql", "SELECT 1 INTO OUTFILE '/tmp/llm_ledger_test'")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: read-only: SELECT ... INTO OUTFILE is not allowed; use --format csv\n"
    )


# --- bad SQL ------------------------------------------------------------------------------


def test_bad_sql_prints_the_database_message_and_exits_2(any_db: str, api) -> None:
    location = ledger_with_calls(any_db)
    result = invoke("--db", reader(location), "sql", "SELEC id FROM calls")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert "syntax" in result.stderr.lower()
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


def test_unknown_table_exits_2(known: str) -> None:  # noqa: F811
    result = invoke("--db", known, "sql", "SELECT * FROM nowhere")
    assert (result.exit_code, result.stderr) == (2, "error: no such table: nowhere\n")


def test_empty_query_exits_2(known: str) -> None:  # noqa: F811
    result = invoke("--db", known, "sql", "-", input="  -- nothing\n")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: empty query: pass the SQL as an argument, or - to read it from stdin\n"
    )


# --- the statement splitter -------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "dialect", "count"),
    [
        ("SELECT 1", "sqlite", 1),
        ("SELECT 1;", "sqlite", 1),
        ("SELECT 1; SELECT 2", "sqlite", 2),
        ("SELECT ';' AS a", "sqlite", 1),
        ("SELECT 'it''s; fine'", "sqlite", 1),
        ('SELECT 1 AS "a;b"', "postgresql", 1),
        ("SELECT 1 /* ; */ -- ;\n", "postgresql", 1),
        ("SELECT $$ ; $$", "postgresql", 1),
        ("SELECT $tag$ ; $tag$; DROP TABLE x", "postgresql", 2),
        ("SELECT E'\\'; DROP TABLE x'", "postgresql", 1),
        ("SELECT '\\'; DROP TABLE x'", "mysql", 1),
        ("SELECT 1 # ; DROP\n", "mariadb", 1),
        ("SELECT `a;b` FROM t", "mariadb", 1),
        ("COMMIT; DROP TABLE requests", "postgresql", 2),
        (" ; ;", "sqlite", 0),
    ],
)
def test_statements_counts_top_level_statements(sql: str, dialect: str, count: int) -> None:
    assert len(statements(sql, dialect)) == count


# --- --timeout ------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "0.0001", "-1", "inf", "-inf", "nan", "86401", "1e300"])
def test_sql_timeout_out_of_range_exits_2_before_connecting(value: str, tmp_path: Path) -> None:
    nowhere = str(tmp_path / "absent.db")  # connecting would say there is no ledger here
    result = invoke("--db", nowhere, "sql", "SELECT 1", "--timeout", value)
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: --timeout must be a number of seconds from 0.001 to 86400, not {value} "
        "(there is no way to turn the limit off)\n"
    )
    assert "Traceback" not in result.output


@pytest.mark.parametrize("value", ["0.001", "86400"])
def test_sql_timeout_bounds_are_accepted(known: str, value: str) -> None:  # noqa: F811
    result = invoke("--db", known, "sql", "SELECT 1 AS one", "--timeout", value, "-f", "csv")
    assert (result.exit_code, result.stdout) == (0, "one\n1\n")
