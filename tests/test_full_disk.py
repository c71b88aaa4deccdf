"""When neither the ledger nor its spool can be written (issue 13, item 3).

The promise (docs/reliability.md): the caller still gets the answer it paid for; the record
is held in memory and logged whole (``ledger.spool_failed``, a line ``recover`` reads);
no further API call is made (``LedgerUnwritableError``, nothing sent) until the database or
the spool takes writes again, when the held records are written first.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from structlog.testing import capture_logs

import llm_ledger
from llm_ledger import LedgerUnwritableError
from llm_ledger.store import spool
from llm_ledger.store.repository import Ledger

from .conftest import msgs

# The synchronous write path (writes="sync"): the default journal moves these writes to its
# writer thread, whose failures test_writebehind.py covers.
pytestmark = pytest.mark.usefixtures("sync_writes")


def call_log_rows(db_path: Path) -> int:
    llm_ledger.flush()  # calls are written behind them (writes="journal")
    engine = create_engine(f"sqlite:///{db_path}")
    with engine.connect() as conn:
        n = int(conn.execute(text("SELECT count(*) FROM call_log")).scalar_one())
    engine.dispose()
    return n


def no_space(*_args: object, **_kw: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_nothing_durable_holds_the_answer_and_refuses_further_calls(api, db_path: Path) -> None:
    c = llm_ledger.OpenAIClient(cache_file_name=str(db_path))
    c.send_message(msgs("before"), temperature=0)
    with pytest.MonkeyPatch.context() as mp, capture_logs() as logs:
        mp.setattr(Ledger, "record", no_space)
        mp.setattr(spool, "append", no_space)
        paid = c.send_message(msgs("paid"), temperature=0)
        assert paid["content"] == "answer 1 to: paid"
        assert c.ledger.held == 1
        with pytest.raises(LedgerUnwritableError) as info:
            c.send_message(msgs("refused"), temperature=0)
        with pytest.raises(LedgerUnwritableError):
            c.get_embedding("refused too")
        assert c.send_message(msgs("before"), temperature=0) is not None  # a hit costs nothing
    assert str(info.value) == (
        f"neither the ledger sqlite:///{db_path} nor its spool {c.ledger.spool_path} can be "
        "written (is the disk full?); 1 paid answers are held in this process's memory only, "
        "so no further API call is made until one of them takes writes again: free space or "
        "fix the database, then call again (the held answers are written first)"
    )
    assert api.chat_count == 2  # "before" and "paid": nothing was sent while refused
    assert api.embedding_count == 0
    failed = [e for e in logs if e["event"] == "ledger.spool_failed"]
    assert [(e["record"]["cache_status"], e["held_in_memory"]) for e in failed] == [
        ("miss", 1),
        ("hit", 2),
    ]
    assert failed[0]["spool_error"] == "[Errno 28] No space left on device"

    # Space again: the held answer is written before the next call is sent.
    assert c.send_message(msgs("after"), temperature=0)["content"] == "answer 1 to: after"
    assert c.ledger.held == 0
    assert call_log_rows(db_path) == 4  # before, paid, after; the hit's row was held too
    assert api.chat_count == 3

    # The log event's record is a spool line recover reads (here: already written).
    with open(c.ledger.spool_path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"event": "ledger.other", "x": 1}) + "\n")
        fh.write(json.dumps(failed[0]) + "\n")
    assert c.ledger.recover() == {
        "written": 0,
        "already_present": 1,
        "unreadable": 0,
        "pending": 0,
    }


def test_a_spool_failed_log_line_is_recovered_into_the_ledger(api, db_path: Path) -> None:
    c = llm_ledger.OpenAIClient(cache_file_name=str(db_path))
    c.send_message(msgs("before"), temperature=0)
    with pytest.MonkeyPatch.context() as mp, capture_logs() as logs:
        mp.setattr(Ledger, "record", no_space)
        mp.setattr(spool, "append", no_space)
        c.send_message(msgs("paid"), temperature=0)
        c.ledger._held.clear()  # the process died: only its log has the record
    (event,) = [e for e in logs if e["event"] == "ledger.spool_failed"]
    c.ledger.spool_path.write_text(json.dumps(event) + "\n")
    assert c.ledger.recover()["written"] == 1
    assert c.send_message(msgs("paid"), temperature=0)["content"] == "answer 1 to: paid"
    assert api.chat_count == 2


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1.5 MB tmpfs (needs root and a kernel that lets this process mount)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root: the full-disk test cannot run here")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1500k", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()})")
    try:
        yield disk
    finally:
        llm_ledger.store.repository.close_all()
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_400_calls_on_a_full_tmpfs_lose_no_answer(api, small_disk: Path) -> None:
    db_path = small_disk / "ledger.db"
    c = llm_ledger.OpenAIClient(cache_file_name=str(db_path))
    answered, refused = [], 0
    for i in range(400):
        try:
            m = c.send_message(msgs(f"question {i} " + "x" * 2000), temperature=0)
            answered.append(m["content"])
        except LedgerUnwritableError:
            refused += 1
    spooled = len(spool.read(c.ledger.spool_path)[0])
    held = c.ledger.held
    rows = call_log_rows(db_path)
    assert api.chat_count == len(answered)  # every answer paid for reached its caller
    assert rows + spooled + held == len(answered)  # ... and is in the ledger, spool or memory
    assert refused == 400 - len(answered)
    assert refused > 0 and held > 0  # the disk did fill: calls stopped instead of losing answers

    subprocess.run(["mount", "-o", "remount,size=16m", str(small_disk)], check=True)
    c.send_message(msgs("space again"), temperature=0)
    assert c.ledger.held == 0
    c.ledger.recover()
    assert call_log_rows(db_path) == len(answered) + 1
    assert not c.ledger.spool_path.exists() or spool.read(c.ledger.spool_path)[0] == []
