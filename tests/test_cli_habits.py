"""CLI habits (issue 13, item 11): --db after the command, --version."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import llm_ledger
from llm_ledger.cli import _db_first, app

from .conftest import msgs


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def ledger_file(client, api, db_path: Path) -> Path:
    client.send_message(msgs("one"), temperature=0)
    client.send_message(msgs("two"), temperature=0)
    llm_ledger.repository.close_all()
    return db_path


def test_version_prints_the_package_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.output == f"llm-ledger {llm_ledger.__version__}\n"


@pytest.mark.parametrize(
    "args",
    [
        ("calls", "--db", "{db}", "--format", "csv"),
        ("calls", "--format", "csv", "--db={db}"),
        ("--db", "elsewhere.db", "calls", "--db", "{db}", "--format", "csv"),
    ],
)
def test_db_is_accepted_after_the_command(ledger_file: Path, args: tuple[str, ...]) -> None:
    result = invoke(*(a.format(db=ledger_file) for a in args))
    assert result.exit_code == 0, result.output
    assert [line.split(",")[0] for line in result.output.splitlines()] == ["id", "2", "1"]
    assert not Path("elsewhere.db").exists()


def test_db_after_sql_and_its_query(ledger_file: Path) -> None:
    result = invoke(
        "sql", "SELECT count(*) AS n FROM call_log", "--db", str(ledger_file), "-f", "csv"
    )
    assert result.exit_code == 0, result.output
    assert result.output == "n\n2\n"


def test_only_db_moves_and_nothing_after_a_double_dash() -> None:
    assert _db_first(["calls", "--limit", "3", "--db", "x.db"]) == [
        "--db",
        "x.db",
        "calls",
        "--limit",
        "3",
    ]
    assert _db_first(["--db", "a.db", "sql", "--", "--db", "x"]) == [
        "--db",
        "a.db",
        "sql",
        "--",
        "--db",
        "x",
    ]


@pytest.mark.parametrize("command", [("costs",), ("costs", "--by", "day"), ("stats",)])
def test_reports_never_write_nor_replay_the_spool(
    client, api, db_path: Path, command: tuple[str, ...]
) -> None:
    """Item 9: costs and stats read through a read-only connection, like calls and sql."""
    client.send_message(msgs("one"), temperature=0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(llm_ledger.repository.Ledger, "record", _down)
        client.send_message(msgs("spooled"), temperature=0)
    llm_ledger.repository.close_all()
    spool = db_path.with_name(db_path.name + ".spool.jsonl")
    before = (db_path.read_bytes(), spool.read_bytes())
    result = invoke("--db", str(db_path), *command, "-f", "csv")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1].split(",")[1] == "1"  # one call: the spooled one is not in
    assert (db_path.read_bytes(), spool.read_bytes()) == before
    wal = Path(f"{db_path}-wal")
    assert not wal.exists() or wal.stat().st_size == 0  # a reader's WAL index, no data


def _down(self, rec):  # noqa: ANN001
    raise OSError("database down")
