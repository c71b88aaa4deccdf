"""The spool: where a paid answer goes when the ledger database cannot take it.

One JSON Lines file per ledger, each line a whole :class:`CallRecord`, appended
and fsync'd before the caller gets its answer. ``recover`` writes the records
into the ledger (each exactly once: the call's uuid is unique there) and
removes the file. Files are created readable by their owner only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from pathlib import Path

from . import process
from .records import CallRecord


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
    data = (json.dumps(record.to_json(), separators=(",", ":"), ensure_ascii=False) + "\n").encode(
        "utf-8"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with process.state.spool_lock:
        created = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
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
            records.append(CallRecord.from_json(json.loads(line.decode("utf-8"))))
        except (ValueError, TypeError, KeyError):  # UnicodeDecodeError is a ValueError
            bad += 1
    return records, bad


def claim(path: Path) -> Path | None:
    """Move the spool aside for recovery, atomically; None when there is none.

    Records appended after the claim go to a new spool file, so a recovery that
    deletes the claimed file when done cannot delete a record it never read, and
    two recoveries (threads or processes) never read the same file.
    """
    claimed = path.with_name(f"{path.name}.recovering-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    with process.state.spool_lock:
        try:
            path.rename(claimed)
        except FileNotFoundError:
            return None
    return claimed


def orphaned_claims(path: Path) -> list[Path]:
    """Claimed files whose recovering process is gone (it died mid-recovery)."""
    found = []
    for claimed in sorted(path.parent.glob(path.name + ".recovering-*")):
        pid = claimed.name.rsplit(".recovering-", 1)[1].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue
        found.append(claimed)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
