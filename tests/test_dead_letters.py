"""Recovery never stops at one bad record, and never strands one (issue 13, items 1 and 2).

A spooled record the database refuses for good (a value its column cannot hold, a broken
constraint) goes to the dead-letter file with the reason; the records after it are
written. A recovery that was killed leaves its claimed file; the next recovery (the
``llm-ledger recover`` command too) finishes it, each record exactly once.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

import llm_ledger
from llm_ledger.cli import app
from llm_ledger.records import CallRecord
from llm_ledger.store import db, repository, spool
from llm_ledger.store.repository import Ledger

from .conftest import msgs

# The synchronous write path (writes="sync"): the default journal moves these writes to its
# writer thread, whose failures test_writebehind.py covers.
pytestmark = pytest.mark.usefixtures("sync_writes")


def call_uuids(url: str) -> list[str]:
    llm_ledger.flush()  # calls are written behind them (writes="journal")
    engine = create_engine(db.normalize_url(url))
    with engine.connect() as conn:
        out = [r[0] for r in conn.execute(text("SELECT call_uuid FROM call_log ORDER BY id"))]
    engine.dispose()
    return out


def spooled_calls(api, url: str, n: int) -> list[CallRecord]:
    """``n`` paid calls whose records went to the spool (the ledger refused every write)."""
    c = llm_ledger.OpenAIClient(cache_file_name=url)
    assert c.ledger is not None  # opened (and created) while it still takes writes

    def down(self, rec):  # noqa: ANN001
        raise OSError("database down")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Ledger, "record", down)
        for i in range(n):
            answer = c.send_message(msgs(f"q{i}"), temperature=0)
            assert answer["content"] == f"answer 1 to: q{i}"
    records, bad = spool.read(c.ledger.spool_path)
    assert (len(records), bad) == (n, 0)
    return records


def poison(engine: str, rec: CallRecord) -> tuple[CallRecord, str]:
    """A record this engine refuses for good, and the words of its refusal."""
    if engine == "postgresql":
        rec.run = "run\x00with a NUL"  # text columns cannot hold NUL
        return rec, "NUL"
    if engine == "mariadb":
        rec.model = "m" * 300  # error 1406, Data too long for column 'model'
        return rec, "Data too long"
    rec.answers = []  # a hit on a response that does not exist: FOREIGN KEY constraint
    rec.primary_answer = None
    rec.served_response_id = 999_999
    return rec, "FOREIGN KEY constraint failed"


@pytest.mark.parametrize("any_db", ["sqlite", "postgresql", "mariadb"], indirect=True)
def test_a_record_refused_for_good_is_dead_lettered_and_the_rest_recovered(
    api, any_db: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = request.node.callspec.params["any_db"]
    records = spooled_calls(api, any_db, 11)
    path = spool.default_spool_path(db.normalize_url(any_db))
    bad, words = poison(engine, records[0])
    path.unlink()
    for rec in [bad, *records[1:]]:
        spool.append(path, rec)
    repository.close_all()

    ledger = Ledger(any_db)  # opening recovers
    assert ledger.recovered_at_open == {
        "written": 10,
        "already_present": 0,
        "unreadable": 0,
        "pending": 0,
        "dead_lettered": 1,
    }
    assert not path.exists()
    assert call_uuids(any_db) == [r.call_uuid for r in records[1:]]
    (dead,) = spool.dead_letters(path)
    assert dead.call_uuid == bad.call_uuid
    assert words in dead.reason
    assert CallRecord.from_json(dead.record).call_uuid == bad.call_uuid
    assert spool.dead_letter_path(path).stat().st_mode & 0o777 == 0o600
    # Nothing left to do, and the dead letter is not written twice.
    assert ledger.recover() == {"written": 0, "already_present": 0, "unreadable": 0, "pending": 0}
    assert len(spool.dead_letters(path)) == 1
    ledger.close()
    result = CliRunner().invoke(app, ["--db", any_db, "recover"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"nothing to recover: no spool file at {path}",
        f"1 dead letters (calls the database refuses for good) in {spool.dead_letter_path(path)}:",
        f"  {dead.summary()}",
    ]
    assert dead.summary().startswith(f"{bad.call_uuid} {bad.created_at.isoformat()} chat ")


def test_a_failing_database_still_keeps_the_rest_pending(
    api, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refusal for now (locked, down) is not a dead letter: the records wait in the spool."""
    records = spooled_calls(api, str(db_path), 3)
    ledger = repository.open_ledger(str(db_path))

    def locked(self):  # noqa: ANN001
        raise OSError("database is locked")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Ledger, "_transaction", locked)
        assert ledger.recover() == {
            "written": 0,
            "already_present": 0,
            "unreadable": 0,
            "pending": 3,
        }
    assert spool.dead_letters(ledger.spool_path) == []
    assert ledger.recover()["written"] == 3
    assert call_uuids(str(db_path)) == [r.call_uuid for r in records]


KILLED_RECOVERY = """
import os, signal, sys
from pathlib import Path
from llm_ledger.store import spool
from llm_ledger.store.repository import Ledger

db, spool_path, n = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
ledger = Ledger(db, spool_dir=sys.argv[4])  # another spool: opening it recovers nothing
claimed = spool.claim(spool_path)
records, _ = spool.read(claimed)
for rec in records[:n]:
    ledger.record(rec)
os.kill(os.getpid(), signal.SIGKILL)  # killed mid-recovery: the claim is left behind
"""


def test_the_recover_command_finishes_a_killed_recovery_exactly_once(
    api, db_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from llm_ledger.cli import app

    records = spooled_calls(api, str(db_path), 10)
    repository.close_all()
    path = spool.default_spool_path(db.normalize_url(str(db_path)))
    done = subprocess.run(
        [sys.executable, "-c", KILLED_RECOVERY, str(db_path), str(path), "4", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == -9, done.stderr
    (left,) = list(tmp_path.glob("ledger.db.spool.jsonl.recovering-*"))
    assert not path.exists()

    result = CliRunner().invoke(app, ["--db", str(db_path), "recover"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == (
        f"recovered {path} into sqlite:///{db_path}: 6 written, 4 already present, "
        "0 unreadable, 0 pending"
    )
    assert not left.exists()
    assert call_uuids(str(db_path)) == [r.call_uuid for r in records]
    result = CliRunner().invoke(app, ["--db", str(db_path), "recover"])
    assert result.output == f"nothing to recover: no spool file at {path}\n"


def test_a_claim_whose_pid_was_reused_is_still_recovered(
    api, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim is a leftover when nobody holds its lock, whatever process has its pid now."""
    records = spooled_calls(api, str(db_path), 2)
    path = spool.default_spool_path(db.normalize_url(str(db_path)))
    path.rename(path.with_name(path.name + ".recovering-1-deadbeef"))  # pid 1 is alive
    repository.close_all()
    ledger = repository.open_ledger(str(db_path))
    assert ledger.recovered_at_open == {
        "written": 2,
        "already_present": 0,
        "unreadable": 0,
        "pending": 0,
    }
    assert call_uuids(str(db_path)) == [r.call_uuid for r in records]


def test_a_claim_a_live_recovery_holds_is_left_to_it(
    api, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spooled_calls(api, str(db_path), 2)
    path = spool.default_spool_path(db.normalize_url(str(db_path)))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from llm_ledger.store import spool; "
            "c = spool.claim(Path(sys.argv[1])); print(c, flush=True); sys.stdin.read()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        claimed = Path(holder.stdout.readline().strip())
        assert claimed.exists() and not path.exists()
        assert spool.leftovers(path) == []
        ledger = repository.open_ledger(str(db_path))
        assert ledger.recover() == {
            "written": 0,
            "already_present": 0,
            "unreadable": 0,
            "pending": 0,
        }
        assert claimed.exists()
    finally:
        holder.communicate("")
    assert spool.leftovers(path) == [claimed]  # its holder is gone: now a leftover
    assert ledger.recover()["written"] == 2
