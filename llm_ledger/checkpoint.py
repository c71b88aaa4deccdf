"""WAL checkpoints of an SQLite ledger, off the callers' threads.

In WAL mode a commit appends pages to the ``-wal`` file; a *checkpoint* copies them back
into the database file and syncs it. By default SQLite runs one inside whichever commit
pushes the WAL past 1,000 pages, so every ~100th call paid a copy and an ``fsync`` (milliseconds
on a busy disk) on its caller's thread. The ledger's hot-path connections turn that off
(``PRAGMA wal_autocheckpoint = 0``) and one daemon thread per ledger and process runs a
``PASSIVE`` checkpoint (it never blocks readers or writers) at most every ``interval``
seconds after a write. A burst of calls then pays one checkpoint, which writes each page
once however many commits changed it.

Nothing is less durable: committed transactions are in the WAL, which SQLite replays on
open after a crash. Connections of the ledger's engine (reports, imports, migrations) keep
SQLite's automatic checkpoint. If the thread stops (it should not), the next write starts
a new one; a forked child starts its own.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from pathlib import Path

import structlog

log = structlog.get_logger("llm_ledger")

DEFAULT_INTERVAL_S = 0.05


class Checkpointer:
    """Runs ``PRAGMA wal_checkpoint(PASSIVE)`` on ``path`` after writes, in a daemon thread."""

    def __init__(self, path: Path, interval: float = DEFAULT_INTERVAL_S) -> None:
        self.path = path
        self.interval = interval
        self.checkpoints = 0  # completed checkpoint calls (tests read it)
        self._wrote = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def wrote(self) -> None:
        """Called after each commit: a checkpoint will follow within ``interval`` seconds."""
        thread = self._thread
        if thread is None or self._pid != os.getpid() or not thread.is_alive():
            self._start()
        self._wrote.set()

    def _start(self) -> None:
        with self._lock:
            thread = self._thread
            if thread is not None and self._pid == os.getpid() and thread.is_alive():
                return
            if self._pid != os.getpid():
                # A forked child: the parent's thread and events do not exist here.
                self._wrote, self._stop = threading.Event(), threading.Event()
            self._pid = os.getpid()
            self._thread = threading.Thread(
                target=self._run, name=f"llm-ledger-checkpoint:{self.path.name}", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        wrote, stop = self._wrote, self._stop
        try:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            log.warning("ledger.checkpointer_failed", db=str(self.path), error=str(exc))
            return
        try:
            while not stop.is_set():
                wrote.wait()
                if stop.wait(self.interval):
                    break
                wrote.clear()
                self._checkpoint(conn)
        finally:
            conn.close()

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self.checkpoints += 1
        except sqlite3.Error as exc:  # busy, or the file went away: try again after the next write
            log.debug("ledger.checkpoint_skipped", db=str(self.path), error=str(exc))

    def close(self) -> None:
        """Stop the thread, then checkpoint what the last writes left in the WAL."""
        thread = self._thread
        if thread is None or self._pid != os.getpid():
            return
        self._stop.set()
        self._wrote.set()
        thread.join(timeout=10)
        self._thread = None
        self._wrote, self._stop = threading.Event(), threading.Event()  # a later write restarts
        with contextlib.suppress(sqlite3.Error):
            conn = sqlite3.connect(self.path, isolation_level=None)
            try:
                self._checkpoint(conn)
            finally:
                conn.close()
