"""Opening something that is not a usable ledger: a clear error naming the file and what
to do, no request sent, and the file left exactly as it was."""

from __future__ import annotations

import os
import socket
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

import llm_ledger
from llm_ledger import LedgerOpenError, SchemaVersionError
from llm_ledger.store import db, repository

from .conftest import msgs

FUTURE = "ffff0000future"


def side_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name + "-"))


def test_random_bytes_file_is_not_a_database(client, api, db_path) -> None:
    junk = os.urandom(4096)
    db_path.write_bytes(junk)
    with pytest.raises(LedgerOpenError) as info:
        client.send_message(msgs(), temperature=0)
    assert str(info.value) == (
        f"sqlite:///{db_path} is not an SQLite database (file is not a database); point "
        "cache_file_name / LLM_LEDGER_URL at a ledger file or a new path"
    )
    assert api.request_count == 0
    assert db_path.read_bytes() == junk
    assert side_files(db_path) == []


def test_sqlite_database_of_another_application_is_refused_and_left_alone(
    client, api, db_path
) -> None:
    llm_ledger.flush()  # writes="journal": this process's calls into the tables first
    con = sqlite3.connect(db_path)
    con.execute("CREATE TABLE foo (x INTEGER)")
    con.execute("INSERT INTO foo VALUES (1)")
    con.commit()
    con.close()
    before = db_path.read_bytes()
    with pytest.raises(LedgerOpenError) as info:
        client.send_message(msgs(), temperature=0)
    assert str(info.value) == (
        f"sqlite:///{db_path} is an SQLite database of another application (tables: foo); "
        "point cache_file_name / LLM_LEDGER_URL (or llm-ledger --db) at a new file"
    )
    assert api.request_count == 0
    # Not even switched to WAL: the other application's file is byte for byte the same.
    assert db_path.read_bytes() == before
    assert side_files(db_path) == []
    llm_ledger.flush()  # writes="journal": this process's calls into the tables first
    con = sqlite3.connect(db_path)
    assert con.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    con.close()


def test_schema_newer_than_the_code_is_refused(any_db: str, api) -> None:
    ledger = repository.open_ledger(any_db)
    with ledger.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": FUTURE})
    repository.close_all()
    where = db.describe(db.normalize_url(any_db))
    client = llm_ledger.OpenAIClient(cache_file_name=any_db)
    with pytest.raises(SchemaVersionError) as info:
        client.send_message(msgs(), temperature=0)
    assert str(info.value) == (
        f"{where} has schema revision {FUTURE}, which this llm_ledger does not know (its "
        f"newest is {db.head_revision()}): the ledger was written by a newer llm_ledger or by "
        "another application; upgrade with `pip install -U llm-ledger`"
    )
    assert isinstance(info.value, LedgerOpenError)
    assert api.request_count == 0
    llm_ledger.flush()  # writes="journal": this process's calls into the tables first
    engine = db.make_engine(any_db)
    with engine.connect() as conn:
        assert db.current_revision(conn) == FUTURE  # not "fixed" behind the user's back
    engine.dispose()


def test_two_revision_rows_are_refused_and_nothing_is_written(any_db: str, api) -> None:
    """Issue #14: alembic_version holding 0003 and 9999 was taken as current."""
    ledger = repository.open_ledger(any_db)
    with ledger.engine.begin() as conn:
        conn.execute(text("INSERT INTO alembic_version (version_num) VALUES ('9999')"))
    repository.close_all()
    where = db.describe(db.normalize_url(any_db))
    both = ", ".join(sorted([db.head_revision(), "9999"]))
    client = llm_ledger.OpenAIClient(cache_file_name=any_db)
    with pytest.raises(SchemaVersionError) as info:
        client.send_message(msgs(), temperature=0)
    assert str(info.value) == (
        f"{where} has schema revision {both}, which this llm_ledger does not know (its "
        f"newest is {db.head_revision()}): the ledger was written by a newer llm_ledger or by "
        "another application; upgrade with `pip install -U llm-ledger`"
    )
    assert api.request_count == 0
    llm_ledger.flush()  # writes="journal": this process's calls into the tables first
    engine = db.make_engine(any_db)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM call_log")).scalar() == 0
        assert conn.execute(text("SELECT COUNT(*) FROM alembic_version")).scalar() == 2
    engine.dispose()


def test_two_revision_rows_are_refused_by_the_cli(any_db: str, api) -> None:
    from typer.testing import CliRunner

    from llm_ledger.cli import app

    ledger = repository.open_ledger(any_db)
    with ledger.engine.begin() as conn:
        conn.execute(text("INSERT INTO alembic_version (version_num) VALUES ('9999')"))
    repository.close_all()
    where = db.describe(db.normalize_url(any_db))
    both = ", ".join(sorted([db.head_revision(), "9999"]))
    for command in (["calls"], ["migrate"]):
        result = CliRunner().invoke(app, ["--db", any_db, *command])
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith(f"error: {where} has schema revision {both}, which "), (
            result.stderr
        )
        assert result.stderr.count("\n") == 1


def test_ledger_tables_without_a_revision_are_refused(db_path) -> None:
    repository.open_ledger(str(db_path))
    repository.close_all()
    llm_ledger.flush()  # writes="journal": this process's calls into the tables first
    con = sqlite3.connect(db_path)
    con.execute("DROP TABLE alembic_version")
    con.commit()
    con.close()
    with pytest.raises(LedgerOpenError) as info:
        repository.open_ledger(str(db_path))
    assert str(info.value) == (
        f"sqlite:///{db_path} holds ledger tables but no alembic_version; stamp it with "
        "`alembic -x url=... stamp head` if it is a ledger, or use another database"
    )


def test_damaged_ledger_file_says_so(db_path) -> None:
    repository.open_ledger(str(db_path))
    repository.close_all()
    data = db_path.read_bytes()
    db_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(LedgerOpenError) as info:
        repository.open_ledger(str(db_path))
    assert str(info.value) == (
        f"sqlite:///{db_path} is damaged (database disk image is malformed); restore it from a "
        "backup, salvage it with `sqlite3 <file> .recover`, or point cache_file_name / "
        "LLM_LEDGER_URL at a new path"
    )


def test_a_directory_is_not_a_ledger_file(tmp_path) -> None:
    where = tmp_path / "ledger.db"
    where.mkdir()
    with pytest.raises(LedgerOpenError) as info:
        repository.open_ledger(str(where))
    assert str(info.value) == (
        f"cannot open the ledger at sqlite:///{where} (unable to open database file); the path "
        "must name a file (not a directory) this user can read and write, in a directory it "
        "can write"
    )


def test_unreachable_server_is_an_open_error_naming_it(api) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    client = llm_ledger.OpenAIClient(
        cache_file_name=f"postgresql://app:s3cr3t-pw@127.0.0.1:{port}/x"
    )
    with pytest.raises(LedgerOpenError) as info:
        client.send_message(msgs(), temperature=0)
    message = str(info.value)
    assert message.startswith(
        f"cannot open the ledger at postgresql+psycopg://app:***@127.0.0.1:{port}/x: "
    )
    assert "Connection refused" in message
    assert "s3cr3t-pw" not in message
    assert api.request_count == 0


def test_unsupported_url_scheme(api) -> None:
    with pytest.raises(LedgerOpenError) as info:
        repository.open_ledger("oracle+nodriver://db/x")
    assert str(info.value).startswith("oracle+nodriver://db/x: unsupported database URL (")


def test_empty_file_becomes_a_new_ledger(client, api, db_path) -> None:
    db_path.touch()
    assert client.send_message(msgs(), temperature=0)["content"] == "answer 1 to: hello there"


def test_a_new_file_another_process_is_creating_is_opened_once_it_is_done(
    tmp_path: Path,
) -> None:
    """Two processes creating one new ledger at once: while one writes the new file's
    first transaction (still in rollback mode), SQLite fails the other's switch to WAL at
    once with "database is locked", without its busy handler (seen in CI under load). The
    switch is tried again until the first is done, and the ledger opens in WAL."""
    import threading
    import time

    path = tmp_path / "new.db"
    first = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    first.execute("BEGIN IMMEDIATE")
    first.execute("CREATE TABLE call_log (id INTEGER PRIMARY KEY)")  # a ledger being made
    done = threading.Timer(0.3, lambda: first.execute("COMMIT"))
    done.start()
    engine = db.make_engine(str(path))
    try:
        started = time.monotonic()
        with engine.connect() as conn:
            mode = conn.execute(text("PRAGMA journal_mode")).scalar_one()
        assert mode == "wal"
        assert time.monotonic() - started >= 0.2  # it waited for the first one's commit
    finally:
        done.join()
        engine.dispose()
        first.close()
