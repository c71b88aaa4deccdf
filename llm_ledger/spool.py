"""The spool: where a paid answer goes when the ledger database cannot take it.

One JSON Lines file per ledger, each line a whole :class:`CallRecord`, appended
and fsync'd before the caller gets its answer. ``recover`` writes the records
into the ledger (each exactly once: the call's uuid is unique there) and
removes the file. Files are created readable by their owner only.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from .records import CallRecord

_lock = threading.Lock()


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
    line = json.dumps(record.to_json(), separators=(",", ":"), ensure_ascii=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lock:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)


def read(path: Path) -> tuple[list[CallRecord], int]:
    """The spooled records, and how many lines were unreadable (a torn last line)."""
    if not path.exists():
        return [], 0
    records, bad = [], 0
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                records.append(CallRecord.from_json(json.loads(line)))
            except (ValueError, TypeError, KeyError):
                bad += 1
    return records, bad
