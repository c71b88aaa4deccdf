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

When a process is done with the ledger (``Ledger.close()``, ``close_all()``, and at
interpreter exit) a ``TRUNCATE`` checkpoint leaves every committed row in the ``.db`` file
itself and an empty ``-wal``, so a copy of the file alone is complete (docs/reliability.md).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .. import process
from ..log import logger
from .background import Debounced

log = logger

DEFAULT_INTERVAL_S = 0.05
TRUNCATE_WAIT_S = 1.0  # at close: how long a TRUNCATE checkpoint waits for other connections


class Checkpointer(Debounced):
    """Runs ``PRAGMA wal_checkpoint(PASSIVE)`` on ``path`` after writes, in a daemon thread."""

    def __init__(self, path: Path, interval: float = DEFAULT_INTERVAL_S) -> None:
        super().__init__(f"llm-ledger-checkpoint:{path.name}", interval)
        self.path = path
        self.checkpoints = 0  # completed checkpoint calls (tests read it)
        self._conn: sqlite3.Connection | None = None  # the thread's own

    def wrote(self) -> None:
        """Called after each commit: a checkpoint will follow within ``interval`` seconds."""
        self.poke()

    def work(self) -> None:
        if self._conn is None:
            try:
                self._conn = sqlite3.connect(
                    self.path, check_same_thread=False, isolation_level=None
                )
            except sqlite3.Error as exc:  # tried again after the next write
                log.warning("ledger.checkpointer_failed", db=str(self.path), error=str(exc))
                return
        self._checkpoint(self._conn)

    def _thread_exit(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _after_fork(self) -> None:
        super()._after_fork()
        if self._conn is not None:  # the parent's: kept, never closed here
            process.state.inherited.append(self._conn)
            self._conn = None

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self.checkpoints += 1
        except sqlite3.Error as exc:  # busy, or the file went away: try again after the next write
            log.debug("ledger.checkpoint_skipped", db=str(self.path), error=str(exc))

    def truncate(self) -> bool:
        """Copy the whole WAL into the database file and cut the WAL to 0 bytes.

        After it the ``.db`` file alone holds every committed row (``cp``, ``datasette -i``
        and ``?immutable=1`` see them all), and a full disk gets the WAL's space back. It
        waits at most ``TRUNCATE_WAIT_S`` for other connections' readers and writers; True
        when the WAL was emptied.
        """
        try:
            # mode=rw: never create the file again if it was deleted meanwhile.
            conn = sqlite3.connect(
                self.path.absolute().as_uri() + "?mode=rw",
                uri=True,
                timeout=TRUNCATE_WAIT_S,
                isolation_level=None,
            )
        except sqlite3.Error:
            return False
        try:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            self.checkpoints += 1
            return busy == 0
        except sqlite3.Error as exc:
            log.debug("ledger.checkpoint_skipped", db=str(self.path), error=str(exc))
            return False
        finally:
            conn.close()

    def close(self) -> None:
        """Stop the thread, then checkpoint (TRUNCATE) what the last writes left in the WAL."""
        if not self.stop():
            return
        self.truncate()
