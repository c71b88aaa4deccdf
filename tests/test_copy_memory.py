"""copy into an empty ledger is verbatim (ids kept, nothing remembered); into a ledger
holding rows it is still a merge (tests/test_transfer.py has the merge's own tests)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, insert, select

import llm_ledger
from llm_ledger import bulk, transfer
from llm_ledger.store import db, repository
from llm_ledger.store.models import Base
from llm_ledger.testing import FakeOpenAIServer

from .conftest import msgs
from .test_transfer import TABLES, digest, record_calls, replay_calls

T = Base.metadata.tables
RESP, ENTRY, LOG, TAGS = T["responses"], T["cache_entries"], T["call_log"], T["call_tags"]
KEYS = {
    "requests": ["request_hash"],
    "responses": ["id"],
    "cache_entries": ["id"],
    "call_log": ["id"],
    "call_tags": ["call_id", "name"],
}
# What the source fixture adds to record_calls: two copies of an answer (a third was
# deleted again, leaving a gap in the ids), a slot-1 entry and a call with a tag using one;
# and one call of record_calls (with its two tags) deleted, another gap.
SOURCE_ROWS = {
    "requests": 6,
    "responses": 6,
    "cache_entries": 5,
    "call_log": 5,
    "call_tags": 5,
}


def rows(location: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table, ids included, in key order."""
    llm_ledger.flush()  # calls are written behind them (writes="journal")
    engine = db.make_engine(location)
    with engine.connect() as conn:
        out = {
            name: [
                dict(r._mapping)
                for r in conn.execute(select(T[name]).order_by(*(T[name].c[k] for k in KEYS[name])))
            ]
            for name in TABLES
        }
    engine.dispose()
    return out


def ids(location: str) -> dict[str, list[tuple[Any, ...]]]:
    """Surrogate ids with the identities they stand for: the same on every engine."""
    engine = db.make_engine(location)
    with engine.connect() as conn:
        out = {
            "responses": conn.execute(
                select(RESP.c.id, RESP.c.request_hash, RESP.c.response_hash).order_by(RESP.c.id)
            ).all(),
            "cache_entries": conn.execute(
                select(
                    ENTRY.c.id,
                    ENTRY.c.namespace,
                    ENTRY.c.request_hash,
                    ENTRY.c.slot,
                    ENTRY.c.response_id,
                ).order_by(ENTRY.c.id)
            ).all(),
            "call_log": conn.execute(
                select(LOG.c.id, LOG.c.call_uuid, LOG.c.response_id).order_by(LOG.c.id)
            ).all(),
            "call_tags": conn.execute(
                select(TAGS.c.call_id, TAGS.c.name, TAGS.c.value).order_by(
                    TAGS.c.call_id, TAGS.c.name
                )
            ).all(),
        }
    engine.dispose()
    return {k: [tuple(r) for r in v] for k, v in out.items()}


def max_id(location: str, table: Any) -> int:
    engine = db.make_engine(location)
    with engine.connect() as conn:
        top = conn.execute(select(func.max(table.c.id))).scalar_one()
    engine.dispose()
    return int(top)


@pytest.fixture
def source(api: FakeOpenAIServer, tmp_path: Path) -> str:
    """record_calls on an SQLite ledger, plus identical responses and gaps in the ids."""
    path = str(tmp_path / "source.db")
    record_calls(llm_ledger.OpenAIClient(cache_file_name=path), api)
    repository.close_all()
    engine = db.make_engine(path)
    with engine.begin() as conn:
        first = dict(
            conn.execute(select(RESP).where(RESP.c.id == 1)).one()._mapping  # France's answer
        )
        del first["id"]
        copies = [conn.execute(insert(RESP).values(first)).inserted_primary_key[0] for _ in "abc"]
        conn.execute(delete(RESP).where(RESP.c.id == copies[1]))
        entry = dict(conn.execute(select(ENTRY).where(ENTRY.c.response_id == 1)).one()._mapping)
        del entry["id"]
        conn.execute(insert(ENTRY).values({**entry, "slot": 1, "response_id": copies[2]}))
        call = dict(conn.execute(select(LOG).where(LOG.c.response_id == 1).limit(1)).one()._mapping)
        del call["id"]
        call.update(call_uuid="00000000-0000-4000-8000-000000000001", slot=1)
        call_id = conn.execute(
            insert(LOG).values({**call, "response_id": copies[2]})
        ).inserted_primary_key[0]
        conn.execute(insert(TAGS).values(call_id=call_id, name="team", value="beta"))
        second = conn.execute(select(LOG.c.id).order_by(LOG.c.id).limit(1).offset(1)).scalar_one()
        conn.execute(delete(TAGS).where(TAGS.c.call_id == second))
        conn.execute(delete(LOG).where(LOG.c.id == second))
    engine.dispose()
    assert {k: len(v) for k, v in rows(path).items()} == SOURCE_ROWS
    return path


def test_copy_into_an_empty_ledger_keeps_every_row_and_id(source: str, tmp_path: Path) -> None:
    target = str(tmp_path / "copy.db")

    result = transfer.copy_ledger(source, target, batch_size=2)

    assert rows(target) == rows(source)
    by_identity = [(q, h) for _, q, h in ids(target)["responses"]]
    assert len(set(by_identity)) == 4  # France's answer three times: each kept
    assert {k: result[k]["added"] for k in ("requests", "responses", "cache_entries")} == {
        k: SOURCE_ROWS[k] for k in ("requests", "responses", "cache_entries")
    }
    assert result["calls"]["added"] == SOURCE_ROWS["call_log"]
    assert result["call_tags"]["added"] == SOURCE_ROWS["call_tags"]
    assert (result["already_present"], result["refused"]) == (0, 0)
    assert result["rows_written"] == sum(SOURCE_ROWS.values())


def test_copy_into_a_ledger_holding_rows_still_merges_identical_responses(
    source: str, api: FakeOpenAIServer, tmp_path: Path
) -> None:
    target = str(tmp_path / "b.db")
    llm_ledger.OpenAIClient(cache_file_name=target).send_message(msgs("B's own"), temperature=0)
    repository.close_all()

    result = transfer.copy_ledger(source, target)

    assert result["responses"] == {"added": 4, "already_present": 2, "refused": 0}
    assert result["cache_entries"]["added"] == 5
    assert result["calls"]["added"] == 5
    assert result["call_tags"]["added"] == 5
    got = ids(target)
    assert len(got["responses"]) == 5  # B's own answer and the source's 4 identities
    _, q, h = ids(source)["responses"][0]  # France's answer, which the source holds 3 times
    (france,) = [i for i, q2, h2 in got["responses"] if (q2, h2) == (q, h)]
    slots = {slot: rid for _, _, q2, slot, rid in got["cache_entries"] if q2 == q}
    assert slots == {0: france, 1: france}  # both slots point at the one France answer
    calls = {rid for _, _, rid in got["call_log"]}
    assert calls & {i for i, _, _ in got["responses"]} == calls - {None}
    again = transfer.copy_ledger(source, target)
    assert (again["added"], again["already_present"]) == (0, sum(SOURCE_ROWS.values()) - 5)
    assert ids(target) == got


def test_recording_after_a_copy_into_an_empty_ledger_works_on_every_engine(
    source: str, any_db: str, api: FakeOpenAIServer
) -> None:
    transfer.copy_ledger(source, any_db, batch_size=3)
    float_digits = 6 if any_db.startswith("mysql") else None
    assert digest(any_db, float_digits=float_digits) == digest(source, float_digits=float_digits)
    assert ids(any_db) == ids(source)
    tops = {t.name: max_id(source, t) for t in (RESP, ENTRY, LOG)}

    client = llm_ledger.OpenAIClient(cache_file_name=any_db)
    with llm_ledger.scope(run="after", tags={"team": "gamma"}):
        assert client.send_message(msgs("A question after the copy"), temperature=0)
    replay_calls(client)
    repository.close_all()

    after = ids(any_db)
    assert [r[0] for r in after["responses"]][-1] == tops["responses"] + 1
    assert [r[0] for r in after["cache_entries"]][-1] == tops["cache_entries"] + 1
    assert [r[0] for r in after["call_log"]][-4:] == [tops["call_log"] + i for i in (1, 2, 3, 4)]
    assert (tops["call_log"] + 1, "team", "gamma") in after["call_tags"]
    assert {k: len(v) for k, v in after.items()} == {
        "responses": SOURCE_ROWS["responses"] + 1,
        "cache_entries": SOURCE_ROWS["cache_entries"] + 1,
        "call_log": SOURCE_ROWS["call_log"] + 4,  # the new miss, then three hits
        "call_tags": SOURCE_ROWS["call_tags"] + 1,
    }


def indexes(location: str) -> list[tuple[str, str]]:
    engine = db.make_engine(location)
    with engine.connect() as conn:
        found = conn.exec_driver_sql(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' ORDER BY name"
        ).all()
    engine.dispose()
    return [(name, sql) for name, sql in found]


def test_a_copy_into_an_empty_sqlite_ledger_builds_its_indexes_again(
    source: str, tmp_path: Path
) -> None:
    target = str(tmp_path / "copy.db")
    transfer.copy_ledger(source, target)
    assert indexes(target) == indexes(source)
    assert len([sql for _, sql in indexes(target) if sql]) >= 10


def test_a_failed_copy_into_an_empty_sqlite_ledger_leaves_it_empty_with_its_indexes(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = str(tmp_path / "copy.db")
    repository.Ledger(target).close()
    before = indexes(target)

    def fail(self: Any, rows: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bulk.Merger, "_calls_verbatim", fail)
    with pytest.raises(OSError, match="No space left"):
        transfer.copy_ledger(source, target)

    assert indexes(target) == before
    assert {k: len(v) for k, v in rows(target).items()} == dict.fromkeys(TABLES, 0)


def _journal_mode_during_copy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The target connection's journal mode, as the copy's transaction begins."""
    seen: list[str] = []
    real = transfer._copy

    def spy(src: Any, target: Any, read: Any, write: Any, *rest: Any) -> Any:
        raw = write.connection.driver_connection
        seen.append(raw.execute("PRAGMA journal_mode").fetchone()[0])
        return real(src, target, read, write, *rest)

    monkeypatch.setattr(transfer, "_copy", spy)
    return seen


def _file_mode(path: str) -> str:
    """What the file's header says (bytes 18-19: 2 is WAL, 1 a rollback journal)."""
    header = Path(path).read_bytes()[:20]
    return {1: "rollback", 2: "wal"}[header[18]]


def test_a_copy_into_a_new_sqlite_file_uses_a_rollback_journal_then_is_wal_again(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In WAL the copy's one transaction wrote every page twice and grew the log's index
    # with the ledger (~6 MB of mapped memory per million calls, docs/benchmarks.md).
    target = str(tmp_path / "copy.db")
    seen = _journal_mode_during_copy(monkeypatch)

    transfer.copy_ledger(source, target)

    assert seen == ["truncate"]
    assert _file_mode(target) == "wal"
    assert not Path(target + "-journal").exists() or Path(target + "-journal").stat().st_size == 0
    assert ids(target) == ids(source)
    raw = sqlite3.connect(target)
    assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    raw.close()


def test_a_copy_into_a_sqlite_file_another_connection_holds_open_runs_in_wal(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = str(tmp_path / "copy.db")
    repository.Ledger(target).close()
    other = sqlite3.connect(target)  # someone reading the new file: the switch is refused
    assert other.execute("SELECT count(*) FROM call_log").fetchone() == (0,)
    seen = _journal_mode_during_copy(monkeypatch)

    transfer.copy_ledger(source, target)

    assert seen == ["wal"]
    assert other.execute("SELECT count(*) FROM call_log").fetchone() == (SOURCE_ROWS["call_log"],)
    other.close()
    assert _file_mode(target) == "wal"
    assert ids(target) == ids(source)


KILLED_COPY = """
import os, sys
from llm_ledger import bulk, transfer
def die(self, rows):  # requests, responses and entries are in: the calls never are
    os._exit(9)
bulk.Merger._calls_verbatim = die
transfer.copy_ledger(sys.argv[1], sys.argv[2])
"""


def test_a_copy_killed_midway_is_rolled_back_at_the_next_open(source: str, tmp_path: Path) -> None:
    target = str(tmp_path / "copy.db")
    done = subprocess.run(
        [sys.executable, "-c", KILLED_COPY, source, target], capture_output=True, timeout=120
    )
    assert done.returncode == 9, done.stderr.decode()[-2000:]
    assert Path(target + "-journal").stat().st_size > 0  # a hot journal, left by the kill

    assert {k: len(v) for k, v in rows(target).items()} == dict.fromkeys(TABLES, 0)
    assert _file_mode(target) == "wal"
    transfer.copy_ledger(source, target)  # and the copy can be made again
    assert ids(target) == ids(source)
