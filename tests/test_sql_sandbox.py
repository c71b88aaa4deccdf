"""``llm-ledger sql`` against the attacks of issue #14, on the real servers.

Every test asserts the refusal (exit 2, one line, no traceback) and that nothing
happened. The harmful probes are harmless if a guard ever fails: files go to a temp
directory the test checks, ``max_connections`` is set to the value it already has, and
``pg_terminate_backend`` aims at a connection the test opened itself.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

import llm_ledger
from llm_ledger.store import db

from .test_cli_core import known  # noqa: F401  (fixture)
from .test_cli_sql import counts, invoke, ledger_with_calls, reader


def refused(result, start: str = "error: read-only: ") -> None:
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(start), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output


@pytest.fixture
def drop_dir(tmp_path: Path) -> Path:
    """A directory the database server could write into, were a guard to fail."""
    path = tmp_path / "drop"
    path.mkdir()
    os.chmod(path, 0o777)
    return path


def admin_scalar(location: str, sql: str) -> object:
    llm_ledger.flush()  # writes="journal": this process's calls into the tables first
    engine = db.make_engine(location, poolclass=NullPool)
    with engine.connect() as conn:
        value = conn.execute(text(sql)).scalar()
    engine.dispose()
    return value


# --- PostgreSQL ---------------------------------------------------------------------


def test_postgresql_superuser_login_is_refused_with_the_reason(pg_url: str, api) -> None:
    location = ledger_with_calls(pg_url)
    result = invoke("--db", location, "sql", "SELECT 1 AS one")
    refused(result)
    assert result.stderr == (
        "error: read-only: `llm-ledger sql` does not run as postgres on PostgreSQL: that "
        "login holds superuser, so a query could read or write server files, run programs, "
        "stop other sessions or change server settings; connect as a read-only login "
        "(`llm-ledger --db ADMIN_URL grant-reader` creates one), or pass --unsafe if everyone "
        "who can run this command may administer the server\n"
    )
    unsafe = invoke("--db", location, "sql", "SELECT 1 AS one", "--unsafe", "-f", "csv")
    assert (unsafe.exit_code, unsafe.stdout) == (0, "one\n1\n")


@pytest.mark.parametrize("as_reader", [True, False], ids=["reader", "superuser"])
@pytest.mark.parametrize(
    "attack",
    [
        "/* /* */ SELECT 1 */ COPY (SELECT 1) TO PROGRAM 'id > {dir}/pwned.txt'",
        "COPY (SELECT 1) TO '{dir}/pwned.txt'",
        "SELECT * FROM (SELECT 1) AS q; COPY (SELECT 1) TO '{dir}/pwned.txt'",
        "SELECT lo_export(lo_from_bytea(0, 'x'), '{dir}/pwned.txt')",
    ],
)
def test_postgresql_server_files_are_never_written(
    pg_url: str, api, drop_dir: Path, attack: str, as_reader: bool
) -> None:
    location = ledger_with_calls(pg_url)
    url = reader(location) if as_reader else location
    refused(invoke("--db", url, "sql", attack.format(dir=drop_dir)), "error: ")
    assert list(drop_dir.iterdir()) == []


@pytest.mark.parametrize(
    ("attack", "message"),
    [
        ("SELECT pg_read_file('/etc/hostname')", "error: permission denied for function"),
        ("SELECT lo_import('/etc/hostname')", "error: read-only: lo_import() is refused: "),
        ("SELECT pg_reload_conf()", "error: permission denied for function"),
        ("SELECT pg_switch_wal()", "error: permission denied for function"),
        ("SELECT set_config('role', 'postgres', true)", "error: permission denied to set role"),
        ("CHECKPOINT", "error: read-only: "),
        ("NOTIFY llm_ledger_test", "error: read-only: "),
        ("LOCK TABLE requests IN ACCESS EXCLUSIVE MODE", "error: read-only: "),
    ],
)
def test_postgresql_server_functions_are_refused(
    pg_url: str, api, attack: str, message: str
) -> None:
    location = ledger_with_calls(pg_url)
    objects = admin_scalar(location, "SELECT COUNT(*) FROM pg_largeobject_metadata")
    before = counts(location)
    refused(invoke("--db", reader(location), "sql", attack), message)
    assert admin_scalar(location, "SELECT COUNT(*) FROM pg_largeobject_metadata") == objects
    assert counts(location) == before


def test_postgresql_other_sessions_cannot_be_terminated(pg_url: str, api) -> None:
    location = ledger_with_calls(pg_url)
    llm_ledger.flush()  # writes="journal": this process's calls into the tables first
    engine = db.make_engine(location, poolclass=NullPool)
    with engine.connect() as victim:
        pid = victim.execute(text("SELECT pg_backend_pid()")).scalar()
        result = invoke("--db", reader(location), "sql", f"SELECT pg_terminate_backend({pid})")
        assert result.exit_code == 2, result.output
        assert result.stderr == (
            "error: read-only: pg_terminate_backend() is refused: it acts on other sessions; "
            "this check reads the whole text, strings and comments too: give text that names "
            "it as a -p value\n"
        )
        assert victim.execute(text("SELECT 1")).scalar() == 1
    engine.dispose()


def test_postgresql_query_stops_at_the_timeout(pg_url: str, api) -> None:
    location = ledger_with_calls(pg_url)
    result = invoke("--db", reader(location), "sql", "SELECT pg_sleep(60)", "--timeout", "0.5")
    refused(result, "error: the query ran longer than --timeout 0.5 s and was stopped")


PG_NOT_IN_A_STRING = (
    "; this check reads the whole text, strings and comments too: give text that names "
    "it as a -p value\n"
)


@pytest.mark.parametrize(
    ("attack", "name"),
    [
        (
            "SELECT count(pg_logical_emit_message(false, 'x', repeat('x', 10000000)))",
            "pg_logical_emit_message",
        ),
        ("SELECT lo_from_bytea(0, 'persisted')", "lo_from_bytea"),
        ("SELECT lo_create(0)", "lo_create"),
        ('SELECT pg_catalog . "lo_creat"(-1)', "lo_creat"),
        ("SELECT LO_PUT(lo_create(0), 0, 'x')", "lo_put"),
        ("SELECT txid_current()", "txid_current"),
        ("SELECT pg_current_xact_id()", "pg_current_xact_id"),
        ("SELECT pg_advisory_lock(7402119)", "pg_advisory_lock"),
        ("SELECT pg_try_advisory_xact_lock(1)", "pg_try_advisory_xact_lock"),
        ("SELECT pg_notify('c', 'x')", "pg_notify"),
        ("SELECT pg_cancel_backend(1)", "pg_cancel_backend"),
        ("SELECT pg_stat_reset_shared('bgwriter')", "pg_stat_reset_shared"),
        ("SELECT query_to_xml('SELECT lo_cre' || 'ate(0)', true, false, '')", "query_to_xml"),
        ("SELECT * FROM ts_stat('SELECT to_tsvector(lo_create(0)::text)')", "lo_create"),
    ],
)
def test_postgresql_functions_acting_beyond_the_transaction_are_refused(
    pg_url: str, api, attack: str, name: str
) -> None:
    location = ledger_with_calls(pg_url)
    objects = admin_scalar(location, "SELECT COUNT(*) FROM pg_largeobject_metadata")
    size = admin_scalar(location, "SELECT pg_relation_size('pg_largeobject')")
    wal = admin_scalar(location, "SELECT pg_current_wal_lsn()")
    result = invoke("--db", reader(location), "sql", attack)
    refused(result)
    assert result.stderr.startswith(f"error: read-only: {name}() is refused: it "), result.stderr
    assert result.stderr.endswith(PG_NOT_IN_A_STRING)
    assert admin_scalar(location, "SELECT COUNT(*) FROM pg_largeobject_metadata") == objects
    assert admin_scalar(location, "SELECT pg_relation_size('pg_largeobject')") == size
    written = admin_scalar(location, f"SELECT pg_current_wal_lsn() - '{wal}'::pg_lsn")
    assert int(str(written)) < 1_000_000  # the emit_message attack wrote 10 MB


def test_postgresql_large_object_refusal_says_why(pg_url: str, api) -> None:
    location = ledger_with_calls(pg_url)
    result = invoke("--db", reader(location), "sql", "SELECT lo_from_bytea(0, 'persisted')")
    assert result.stderr == (
        "error: read-only: lo_from_bytea() is refused: it writes large objects, whose storage "
        "outlives the rollback" + PG_NOT_IN_A_STRING
    )


def test_postgresql_unicode_escaped_identifiers_are_refused(pg_url: str, api) -> None:
    location = ledger_with_calls(pg_url)
    result = invoke("--db", reader(location), "sql", 'SELECT U&"lo\\005fcreate"(0)')
    refused(result)
    assert result.stderr == (
        'error: read-only: U&"..." identifiers are refused (they could spell a refused '
        "function's name); write the name plainly\n"
    )


def test_postgresql_a_refused_name_passes_as_a_parameter_value(pg_url: str, api) -> None:
    location = ledger_with_calls(pg_url)
    result = invoke(
        "--db", reader(location), "sql", "SELECT :v AS v", "-p", "v", "lo_create", "-f", "csv"
    )
    assert (result.exit_code, result.stdout) == (0, "v\nlo_create\n")


def test_postgresql_timeout_below_a_millisecond_is_refused_before_connecting(
    pg_url: str, api
) -> None:
    location = ledger_with_calls(pg_url)
    result = invoke("--db", reader(location), "sql", "SELECT pg_sleep(3)", "--timeout", "0.0001")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: --timeout must be a number of seconds from 0.001 to 86400, not 0.0001 "
        "(there is no way to turn the limit off)\n"
    )


def test_postgresql_one_millisecond_timeout_stops_the_query(pg_url: str, api) -> None:
    location = ledger_with_calls(pg_url)
    result = invoke("--db", reader(location), "sql", "SELECT pg_sleep(3)", "--timeout", "0.001")
    refused(result, "error: the query ran longer than --timeout 0.001 s and was stopped")


def test_postgresql_reader_reads_with_repeated_column_names(pg_url: str, api) -> None:
    location = ledger_with_calls(pg_url)
    result = invoke(
        "--db", reader(location), "sql",
        "SELECT id, id FROM call_log ORDER BY id DESC;", "-f", "csv",
    )  # fmt: skip
    assert (result.exit_code, result.stdout) == (0, "id,id_2\n2,2\n1,1\n")


# --- MariaDB --------------------------------------------------------------------------


def test_mariadb_root_login_is_refused_with_the_reason(mysql_url: str, api) -> None:
    location = ledger_with_calls(mysql_url)
    result = invoke("--db", location, "sql", "SELECT 1 AS one")
    refused(result)
    assert "that login holds ALL PRIVILEGES" in result.stderr
    assert "grant-reader" in result.stderr


@pytest.mark.parametrize("as_reader", [True, False], ids=["reader", "root"])
@pytest.mark.parametrize(
    "attack",
    [
        "SELECT 1 /*! INTO OUTFILE '{dir}/pwned.txt' */",
        "SELECT 1 INTO DUMPFILE '{dir}/pwned.txt'",
        "SELECT 1) AS q INTO OUTFILE '{dir}/pwned.txt' /*",
        "SELECT 1 /*!99999 ) */ INTO OUTFILE '{dir}/pwned.txt'",
    ],
)
def test_mariadb_server_files_are_never_written(
    mysql_url: str, api, drop_dir: Path, attack: str, as_reader: bool
) -> None:
    location = ledger_with_calls(mysql_url)
    url = reader(location) if as_reader else location
    refused(invoke("--db", url, "sql", attack.format(dir=drop_dir)))
    assert list(drop_dir.iterdir()) == []


@pytest.mark.parametrize("as_reader", [True, False], ids=["reader", "root"])
def test_mariadb_set_global_is_refused(mysql_url: str, api, as_reader: bool) -> None:
    location = ledger_with_calls(mysql_url)
    now = admin_scalar(location, "SELECT @@GLOBAL.max_connections")
    url = reader(location) if as_reader else location
    # The value it already has: harmless should a guard ever fail.
    refused(invoke("--db", url, "sql", f"SET GLOBAL max_connections = {now}"))
    hidden = f"SELECT 1 /*! ; SET GLOBAL max_connections = {now} */"
    refused(invoke("--db", url, "sql", hidden), "error: ")
    assert admin_scalar(location, "SELECT @@GLOBAL.max_connections") == now


def test_mariadb_load_file_reads_nothing(mysql_url: str, api) -> None:
    location = ledger_with_calls(mysql_url)
    refused(invoke("--db", location, "sql", "SELECT LOAD_FILE('/etc/hostname') AS f"))
    result = invoke(
        "--db", reader(location), "sql", "SELECT LOAD_FILE('/etc/hostname') AS f", "-f", "json"
    )
    assert (result.exit_code, result.stdout) == (0, '[\n  {\n    "f": null\n  }\n]\n')


def test_mariadb_keeps_order_and_repeated_names(mysql_url: str, api) -> None:
    location = ledger_with_calls(mysql_url)
    result = invoke(
        "--db", reader(location), "sql", "SELECT id, id FROM call_log ORDER BY id DESC", "-f", "csv"
    )
    assert (result.exit_code, result.stdout) == (0, "id,id_2\n2,2\n1,1\n")


def test_mariadb_query_stops_at_the_timeout(mysql_url: str, api) -> None:
    location = ledger_with_calls(mysql_url)
    result = invoke("--db", reader(location), "sql", "SELECT SLEEP(60)", "--timeout", "0.5")
    refused(result, "error: the query ran longer than --timeout 0.5 s and was stopped")


@pytest.mark.parametrize(
    ("attack", "what"),
    [
        ("SELECT id FROM call_log LOCK IN SHARE MODE", "LOCK IN SHARE MODE"),
        ("SELECT id FROM call_log lock/**/in -- x\n share # y\n mode", "LOCK IN SHARE MODE"),
        ("SELECT id FROM call_log /*!50000LOCK IN SHARE MODE*/", "LOCK IN SHARE MODE"),
        ("SELECT * FROM (SELECT id FROM call_log LOCK IN SHARE MODE) AS q", "LOCK IN SHARE MODE"),
        ("SELECT id FROM call_log FOR SHARE", "FOR SHARE"),
        ("SELECT GET_LOCK('llm_ledger_migrate', 0)", "GET_LOCK()"),
    ],
)
def test_mariadb_locking_reads_are_refused(mysql_url: str, api, attack: str, what: str) -> None:
    location = ledger_with_calls(mysql_url)
    before = counts(location)
    result = invoke("--db", reader(location), "sql", attack)
    refused(result)
    assert result.stderr.startswith(f"error: read-only: {what} is refused: "), result.stderr
    assert result.stderr.endswith(
        "; this check reads the whole text, strings and comments too: give text that names "
        "it as a -p value\n"
    )
    assert counts(location) == before


def test_mariadb_lock_in_share_mode_does_not_hold_up_a_writer(mysql_url: str, api) -> None:
    import threading
    import time

    location = ledger_with_calls(mysql_url)
    url = reader(location)
    query = "SELECT id, SLEEP(3) AS s FROM call_log WHERE id = 1 LOCK IN SHARE MODE"
    reading = threading.Thread(target=invoke, args=("--db", url, "sql", query))
    reading.start()
    time.sleep(1)
    llm_ledger.flush()
    engine = db.make_engine(location, poolclass=NullPool)
    began = time.monotonic()
    with engine.begin() as conn:
        conn.execute(text("SET SESSION innodb_lock_wait_timeout = 10"))
        conn.execute(text("UPDATE call_log SET model = model WHERE id = 1"))
    waited = time.monotonic() - began
    engine.dispose()
    reading.join()
    assert waited < 1.0, waited


def test_grant_reader_prints_the_url_without_the_password(mysql_url: str, api) -> None:
    from typer.testing import CliRunner

    from llm_ledger.cli import app

    location = ledger_with_calls(mysql_url)
    result = CliRunner().invoke(
        app,
        ["--db", location, "grant-reader", "--name", "llm_ledger_sec_probe"],
        env={"LLM_LEDGER_READER_PASSWORD": "s3cret-pw"},
    )
    assert result.exit_code == 0, result.output
    assert "s3cret-pw" not in result.output
    assert "llm_ledger_sec_probe:***@127.0.0.1" in result.output


# --- SQLite ---------------------------------------------------------------------------


def test_sqlite_table_valued_pragma_reads(known: str) -> None:  # noqa: F811
    result = invoke("--db", known, "sql", "SELECT * FROM pragma_user_version", "-f", "csv")
    assert (result.exit_code, result.stdout) == (0, "user_version\n0\n")


def test_sqlite_schema_table_stays_unwritable(known: str) -> None:  # noqa: F811
    result = invoke("--db", known, "sql", "UPDATE sqlite_master SET sql = ''")
    refused(result)
    assert result.stderr.endswith("(table sqlite_master may not be modified)\n")


@pytest.mark.parametrize(
    "attack",
    [
        "PRAGMA writable_schema = ON",
        "PRAGMA journal_mode = DELETE",
        "VACUUM INTO '{dir}/copy.db'",
        "ATTACH '{dir}/x.db' AS x",
        "SELECT load_extension('{dir}/evil')",
        "DELETE FROM call_tags RETURNING *",
        "WITH gone AS (SELECT 1) DELETE FROM call_tags",
    ],
)
def test_sqlite_holds_against_the_reviewed_attacks(
    known: str,  # noqa: F811
    drop_dir: Path,
    attack: str,
) -> None:
    before = counts(known)
    result = invoke("--db", known, "sql", attack.format(dir=drop_dir))
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: "), result.stderr
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.output
    assert list(drop_dir.iterdir()) == []
    assert counts(known) == before


@pytest.mark.parametrize(
    ("attack", "function"),
    [
        ("SELECT hex(fts3_tokenizer('simple'))", "fts3_tokenizer"),
        ("SELECT fts3_tokenizer('simple', x'0000000000000000')", "fts3_tokenizer"),
        ("SELECT FTS3_TOKENIZER('porter')", "FTS3_TOKENIZER"),
        ("SELECT load_extension('/nonexistent/evil')", "load_extension"),
        ("SELECT fts5(NULL)", "fts5"),
    ],
)
def test_sqlite_dangerous_functions_are_refused(known: str, attack: str, function: str) -> None:  # noqa: F811
    result = invoke("--db", known, "sql", attack)
    refused(result)
    assert result.stderr == (
        "error: read-only: `llm-ledger sql` does not change the ledger; the database refused "
        f"this SELECT statement (not authorized to use function: {function})\n"
    )


def test_sqlite_query_stops_at_the_timeout(known: str) -> None:  # noqa: F811
    import time

    endless = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000000) "
        "SELECT count(*) FROM n"
    )
    began = time.monotonic()
    result = invoke("--db", known, "sql", endless, "--timeout", "0.5")
    assert time.monotonic() - began < 5
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        "error: the query ran longer than --timeout 0.5 s and was stopped; narrow it, or "
        "give a larger --timeout (at most 86400)\n"
    )


# --- grant-reader -----------------------------------------------------------------------


def login_of(location: str) -> str:
    """grant-reader's default login for the ledger at ``location``."""
    return f"{make_url(location).database}_reader"


def reader_scalar(url: str, sql: str) -> object:
    engine = db.make_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql)).scalar()
    finally:
        engine.dispose()


def test_grant_reader_postgresql_login_defaults_to_read_only(pg_url: str, api) -> None:
    location = ledger_with_calls(pg_url)
    url = reader(location)
    assert reader_scalar(url, "SHOW default_transaction_read_only") == "on"
    assert reader_scalar(url, "SHOW statement_timeout") == "1min"
    assert reader_scalar(url, "SHOW idle_in_transaction_session_timeout") == "1min"
    assert (
        admin_scalar(
            location, f"SELECT rolconnlimit FROM pg_roles WHERE rolname = '{login_of(location)}'"
        )
        == 10
    )
    with pytest.raises(
        DBAPIError, match="cannot execute CREATE TABLE AS in a read-only transaction"
    ):
        reader_scalar(url, "CREATE TEMP TABLE t AS SELECT 1 AS a")


def test_grant_reader_postgresql_revokes_an_explicit_temporary_grant(pg_url: str, api) -> None:
    location = ledger_with_calls(pg_url)
    reader(location)
    database = admin_scalar(location, "SELECT current_database()")
    login = login_of(location)

    def readers_privileges() -> list[str]:
        acl = admin_scalar(
            location, f"SELECT datacl::text FROM pg_database WHERE datname = '{database}'"
        )
        entries = str(acl).strip("{}").split(",")
        return [e.split("=")[1].split("/")[0] for e in entries if e.startswith(login + "=")]

    engine = db.make_engine(location, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(text(f'GRANT TEMPORARY ON DATABASE "{database}" TO "{login}"'))
    engine.dispose()
    assert readers_privileges() == ["Tc"]
    reader(location)
    assert readers_privileges() == ["c"]  # CONNECT only


def test_grant_reader_mariadb_login_has_limits(mysql_url: str, api) -> None:
    location = ledger_with_calls(mysql_url)
    reader(location)
    shown = admin_scalar(location, f"SHOW CREATE USER '{login_of(location)}'@'%'")
    assert str(shown).endswith("WITH MAX_USER_CONNECTIONS 10 MAX_STATEMENT_TIME 60.000000")
