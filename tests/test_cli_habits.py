"""CLI habits (issue 13, item 11): --db after the command, --version."""

from __future__ import annotations

import json
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
    llm_ledger.store.repository.close_all()
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
    client, api, db_path: Path, command: tuple[str, ...], sync_writes
) -> None:
    """Item 9: costs and stats read through a read-only connection, like calls and sql."""
    client.send_message(msgs("one"), temperature=0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(llm_ledger.store.repository.Ledger, "record", _down)
        client.send_message(msgs("spooled"), temperature=0)
    llm_ledger.store.repository.close_all()
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


# --- item 10: bad input to the CLI gets one clear line ---------------------------------


def test_a_directory_as_ledger_is_one_line_with_the_librarys_words(tmp_path: Path) -> None:
    where = tmp_path / "adir"
    where.mkdir()
    expected = (
        f"error: cannot open the ledger at sqlite:///{where} (unable to open database file); "
        "the path must name a file (not a directory) this user can read and write, in a "
        "directory it can write\n"
    )
    for command in ("info", "calls", "costs", "stats"):
        result = invoke("--db", str(where), command)
        assert (result.exit_code, result.stderr) == (2, expected), command


def test_a_file_that_is_not_a_database_is_one_line_with_the_librarys_words(
    tmp_path: Path,
) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# not a ledger\n")
    expected = (
        f"error: sqlite:///{readme} is not an SQLite database (file is not a database); point "
        "cache_file_name / LLM_LEDGER_URL at a ledger file or a new path\n"
    )
    for command in ("info", "calls", "costs", "stats"):
        result = invoke("--db", str(readme), command)
        assert (result.exit_code, result.stderr) == (2, expected), command
    assert readme.read_text() == "# not a ledger\n"


def test_export_to_a_directory_names_it_not_a_temp_file(ledger_file: Path, tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    result = invoke("--db", str(ledger_file), "export", str(target))
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: cannot write {target}: it is a directory; name a bundle file, e.g. "
        f"{target / 'ledger.jsonl.gz'}\n"
    )
    assert list(target.iterdir()) == []


@pytest.mark.parametrize("name", ["ledger.db", "ledger.db-shm", "ledger.db.spool.jsonl"])
def test_export_never_overwrites_the_ledger_or_its_files(ledger_file: Path, name: str) -> None:
    """``export ledger.db`` renamed the bundle over the ledger itself; now refused first."""
    import sqlite3

    assert ledger_file.name == "ledger.db"
    target = ledger_file.parent / "link.jsonl"
    target.symlink_to(ledger_file.parent / name)  # a link to it is refused too
    for path in (ledger_file.parent / name, target):
        result = invoke("--db", str(ledger_file), "export", str(path))
        assert result.exit_code == 2
        assert result.stderr == (
            f"error: cannot write {path}: it is the ledger {ledger_file} or one of its files; "
            "name another file, e.g. ledger.jsonl.gz\n"
        )
    with sqlite3.connect(ledger_file) as conn:
        assert conn.execute("SELECT count(*) FROM call_log").fetchone()[0] == 2
    assert target.is_symlink()


def test_huge_limit_and_call_id_are_clean_errors(ledger_file: Path) -> None:
    huge = "99999999999999999999"
    result = invoke("--db", str(ledger_file), "calls", "--limit", huge)
    assert (result.exit_code, result.stderr) == (
        2,
        f"error: --limit {huge}: at most 9223372036854775807 (or 0: every call)\n",
    )
    result = invoke("--db", str(ledger_file), "show", huge)
    assert (result.exit_code, result.stderr) == (
        2,
        f"error: no call {huge} in sqlite:///{ledger_file}; `llm-ledger calls` lists them\n",
    )


# --- item 11: totals that add up, the "none" group named, an empty result said ----------


def test_copy_and_import_tables_add_up_and_say_where_the_tags_went(
    client, api, db_path: Path, tmp_path: Path
) -> None:
    with llm_ledger.scope(run="r", tags={"team": "a", "env": "dev"}):
        client.send_message(msgs("one"), temperature=0)
        client.send_message(msgs("two"), temperature=0)
    llm_ledger.store.repository.close_all()
    result = invoke("--db", str(db_path), "copy", "--to", str(tmp_path / "c.db"))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[-3] == "call tags (inside the calls above): 4 added, 0 already present, 0 refused"
    assert lines[-2] == "copied: 8 added, 0 already present, 0 refused"
    assert lines[-1].endswith("rows/s): 8 records + 4 call tags")
    assert lines[-1].startswith(f"12 rows written to sqlite:///{tmp_path / 'c.db'} in ")
    rows = json.loads(
        invoke("--db", str(db_path), "copy", "--to", str(tmp_path / "d.db"), "-f", "json").stdout
    )
    assert [r["records"] for r in rows] == [
        "requests",
        "responses",
        "cache_entries",
        "calls",
        "total",
    ]
    assert sum(r["added"] for r in rows[:-1]) == rows[-1]["added"] == 8


@pytest.mark.parametrize(("by", "name"), [("run", "(no run)"), ("template", "(no template)")])
def test_costs_names_the_group_of_calls_without_one(ledger_file: Path, by: str, name: str) -> None:
    result = invoke("--db", str(ledger_file), "costs", "--by", by, "-f", "csv")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1].split(",")[:2] == [name, "2"]
    rows = json.loads(invoke("--db", str(ledger_file), "costs", "--by", by, "-f", "json").stdout)
    assert rows[0][by] is None  # JSON keeps null for programs


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("calls", "--run", "nope"), "no calls match these filters"),
        (
            ("costs", "--since", "2099-01-01"),
            "no calls match: the ledger holds none in this range (or with these filters)",
        ),
        (
            ("stats", "--since", "2099-01-01"),
            "no calls match: the ledger holds none in this range (or with these filters)",
        ),
    ],
)
def test_an_empty_result_says_so(ledger_file: Path, args: tuple[str, ...], says: str) -> None:
    result = invoke("--db", str(ledger_file), *args)
    assert (result.exit_code, result.output) == (0, says + "\n")
