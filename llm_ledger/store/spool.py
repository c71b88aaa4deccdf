"""The spool: where a paid answer goes when the ledger database cannot take it.

One JSON Lines file per ledger, each line a whole :class:`CallRecord`, appended
and fsync'd before the caller gets its answer. ``recover`` writes the records
into the ledger (each exactly once: the call's uuid is unique there) and
removes the file. A record the database refuses for good (it can never be
written, e.g. a value too long for its column) is moved to the *dead-letter*
file ``<spool>.dead.jsonl`` with the reason, so it cannot block the records
after it. Files are created readable by their owner only.

A recovery works on a *claimed* copy (``<spool>.recovering-<pid>-<id>``) and holds
an ``flock`` on it while it does: a claim nobody holds is a leftover of a
recovery that was killed, and the next recovery finishes it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import process
from ..records import CallRecord


def default_spool_path(url: str, spool_dir: str | None = None) -> Path:
    from .db import sqlite_path

    if spool_dir:
        base = Path(spool_dir)
        name = "spool-" + hashlib.sha256(url.encode()).hexdigest()[:12] + ".jsonl"
        return base / name
    path = sqlite_path(url)
    if path is not None:
        return path.with_name(path.name + ".spool.jsonl")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llm_ledger"
    return cache / ("spool-" + hashlib.sha256(url.encode()).hexdigest()[:12] + ".jsonl")


def append(path: Path, record: CallRecord) -> None:
    """Append one record and fsync it (and, for a new file, its directory entry)."""
    _append_line(path, record.to_json())


def _append_line(path: Path, obj: dict[str, Any]) -> None:
    data = (json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    with process.state.spool_lock:
        created = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except OSError:
            # A full disk can take part of the line: cut it off again, so the file holds
            # whole records only (a torn line would be counted unreadable).
            with contextlib.suppress(OSError):
                os.ftruncate(fd, os.lseek(fd, 0, os.SEEK_END) - (len(data) - len(view)))
            raise
        finally:
            os.close(fd)
        if created:
            _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be fsync'd
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read(path: Path) -> tuple[list[CallRecord], int]:
    """The spooled records, and how many lines were unreadable (a torn last line)."""
    if not path.exists():
        return [], 0
    records, bad = [], 0
    for line in path.read_bytes().splitlines():
        if not line.strip():
            continue
        try:
            obj = json.loads(line.decode("utf-8"))
            if isinstance(obj, dict) and "event" in obj:
                # A JSON log line: the ``ledger.spool_failed`` event carries the whole record
                # (appended here by hand, see docs/reliability.md); other events are skipped.
                if obj["event"] != "ledger.spool_failed":
                    continue
                obj = obj["record"]
            records.append(CallRecord.from_json(obj))
        except (ValueError, TypeError, KeyError):  # UnicodeDecodeError is a ValueError
            bad += 1
    return records, bad


# --- dead letters ----------------------------------------------------------------------


def dead_letter_path(path: Path) -> Path:
    """Where records the database refuses for good go: ``<spool>.dead.jsonl``."""
    return path.with_name(path.name + ".dead.jsonl")


@dataclass(frozen=True)
class DeadLetter:
    """A spooled call the database refused for good, and why."""

    dead_at: str
    reason: str
    error_type: str
    record: dict[str, Any]  # the CallRecord as spooled (CallRecord.from_json reads it)

    @property
    def call_uuid(self) -> str:
        return str(self.record.get("call_uuid"))

    def summary(self) -> str:
        r = self.record
        return (
            f"{self.call_uuid} {r.get('created_at', {}).get('$dt', '?')} {r.get('kind')} "
            f"{str(r.get('model'))[:60]!r}: {self.error_type}: {self.reason}"
        )


def bury(path: Path, record: CallRecord, error: BaseException) -> None:
    """Append ``record`` to the dead-letter file of spool ``path`` with the error's reason."""
    orig = getattr(error, "orig", None) or error
    _append_line(
        dead_letter_path(path),
        {
            "dead_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "error_type": type(orig).__name__,
            "reason": str(orig).strip()[:1000],
            "record": record.to_json(),
        },
    )


def dead_letters(path: Path) -> list[DeadLetter]:
    """The dead letters of spool ``path``, oldest first (lines that do not parse are skipped)."""
    where = dead_letter_path(path)
    if not where.exists():
        return []
    out = []
    for line in where.read_bytes().splitlines():
        try:
            obj = json.loads(line.decode("utf-8"))
            out.append(DeadLetter(obj["dead_at"], obj["reason"], obj["error_type"], obj["record"]))
        except (ValueError, TypeError, KeyError):
            continue
    return out


def claim(path: Path) -> Path | None:
    """Move the spool aside for recovery, atomically, and lock it; None when there is none.

    Records appended after the claim go to a new spool file, so a recovery that
    deletes the claimed file when done cannot delete a record it never read, and
    two recoveries (threads or processes) never read the same file. The file is
    locked (``flock``) before it is renamed, so no other recovery can take it for a
    leftover in between; :func:`retire` (or the process's death) releases it.
    """
    claimed = path.with_name(f"{path.name}.recovering-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    with process.state.spool_lock:
        while True:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                return None
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    path.rename(claimed)
                    break
            except FileNotFoundError:
                os.close(fd)
                return None  # another recovery claimed it first
            os.close(fd)  # another recovery claimed the file we locked: try the new one
        process.state.spool_claims[claimed] = fd
    return claimed


def orphaned_claims(path: Path) -> list[Path]:
    """Claimed files no live recovery holds (it was killed mid-recovery): each one returned
    is now locked by this process, to be finished and retired by the caller."""
    found = []
    for claimed in sorted(path.parent.glob(path.name + ".recovering-*")):
        with process.state.spool_lock:
            if claimed in process.state.spool_claims:
                continue  # this process is recovering it
            try:
                fd = os.open(claimed, os.O_RDONLY)
            except FileNotFoundError:
                continue  # finished meanwhile
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue  # a live recovery holds it
            if not claimed.exists():  # retired between the glob and the lock
                os.close(fd)
                continue
            process.state.spool_claims[claimed] = fd
        found.append(claimed)
    return found


def leftovers(path: Path) -> list[Path]:
    """What a recovery would work on: the spool and every claim no live recovery holds
    (without taking them)."""
    out = [path] if path.exists() else []
    for claimed in sorted(path.parent.glob(path.name + ".recovering-*")):
        if claimed in process.state.spool_claims:
            continue
        try:
            fd = os.open(claimed, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue
        finally:
            os.close(fd)  # closing the descriptor releases a lock taken here
        out.append(claimed)
    return out


def release(claimed: Path) -> None:
    """Unlock a claimed file without finishing it (it stays a leftover for the next recovery)."""
    with process.state.spool_lock:
        fd = process.state.spool_claims.pop(claimed, None)
    if fd is not None:
        os.close(fd)


def retire(claimed: Path, keep_as: Path | None = None) -> None:
    """Done with a claimed file: delete it, or (it had unreadable lines) append it to ``keep_as``."""
    try:
        if keep_as is not None:
            data = claimed.read_bytes()
            fd = os.open(keep_as, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        claimed.unlink()
    except FileNotFoundError:
        pass  # another recovery finished it
    finally:
        release(claimed)
