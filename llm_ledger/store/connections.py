"""The connections a thread keeps to one ledger's database, so a call checks nothing out
of a pool:

- a file SQLite ledger: each thread's own connection, for its lookups and its writes. Its
  automatic WAL checkpoint is off: ``checkpoint.Checkpointer`` runs them after writes.
- PostgreSQL, MariaDB/MySQL: up to :data:`LOOKUP_CONNECTIONS` threads' own connections for
  lookups, in autocommit (one ``SELECT`` round trip: no checkout, no BEGIN/ROLLBACK, no
  autocommit switching). Further threads, and every write, use the engine's pool.

Each lives as long as its thread (closed when the thread's locals go) or the ledger
(:meth:`ThreadConnections.close`), and is used under its lock, so a close from another
thread waits for a call to end. A forked child opens its own: the parent's are kept,
unused and never closed (``process.py``), and do not count against the cap.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import Engine

from ..process import state as _process

LOOKUP_CONNECTIONS = 8  # per ledger and process, besides the pool (default 5 + 10)
_SERVERS = ("postgresql", "mysql", "mariadb")
WRITE_LOCK_WAITS_S = (0.0001, 0.002)  # begin_write: the first wait between tries, the longest
_SQLITE_BUSY = 5  # sqlite3.SQLITE_BUSY (a name from Python 3.11 on)


def begin_write(conn: sqlite3.Connection, timeout_ms: int, *, wait: bool = True) -> None:
    """``BEGIN IMMEDIATE`` on a thread's own SQLite connection, waiting for the write lock
    in short sleeps, for up to ``timeout_ms`` as before.

    SQLite's busy handler sleeps 1, 2, 5, 10, 15, 20, 25 ... 100 ms between its tries, so
    with several processes' writers taking turns the lock sat free while they slept (4
    processes x 4 threads: each writer waited ~0.6 s per 1,000 calls, for ~0.06 s of work).
    Here a try every 0.1 ms at first, doubling to 2 ms. The lock taken at BEGIN, nothing in
    the transaction waits again: in WAL, readers never hold up a writer. ``wait=False``:
    one try, "database is locked" at once if another connection holds the lock.
    """
    with no_busy_wait(conn, timeout_ms):
        until_not_busy(
            lambda: conn.execute("BEGIN IMMEDIATE"),
            timeout_ms / 1000 if wait else 0,
            WRITE_LOCK_WAITS_S,
        )


def until_not_busy(
    attempt: Callable[[], object], timeout_s: float, waits: tuple[float, float]
) -> None:
    """``attempt()`` again while SQLite says "database is locked", sleeping ``waits[0]``
    first, doubling up to ``waits[1]``, for up to ``timeout_s`` (0: one try); any other
    error, or the last busy one, is raised. For what SQLite's own busy handler does not
    cover, or covers with sleeps too long (:func:`begin_write`, ``db._wal_on``)."""
    pause, deadline = waits[0], time.monotonic() + timeout_s
    while True:
        try:
            attempt()
            return
        except sqlite3.OperationalError as exc:
            left = deadline - time.monotonic()
            if not _busy(exc) or left <= 0:
                raise
            time.sleep(min(pause, left))
            pause = min(pause * 2, waits[1])


@contextlib.contextmanager
def no_busy_wait(conn: Any, timeout_ms: int) -> Iterator[None]:
    """An SQLite connection that reports a held lock at once ("database is locked"), not
    after its busy timeout; set back to ``timeout_ms`` after."""
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        yield
    finally:
        conn.execute(f"PRAGMA busy_timeout = {timeout_ms}")


def _busy(exc: sqlite3.OperationalError) -> bool:
    """Whether SQLite's error is SQLITE_BUSY ("database is locked")."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return bool(code & 0xFF == _SQLITE_BUSY)
    return "database is locked" in str(exc)


class Hot:
    """A thread's connection (a holder, since sqlite3 connections take no weak references)."""

    __slots__ = ("conn", "pid", "lock", "__weakref__")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.pid = os.getpid()
        self.lock = threading.RLock()

    def close(self) -> None:
        """Close it once its thread is between calls (never under a running statement)."""
        with self.lock:
            self.pid = -1  # its thread opens a new one if the ledger is used again
            with contextlib.suppress(Exception):
                self.conn.close()


class ThreadConnections:
    """One ledger's per-thread connections (see the module docstring)."""

    def __init__(self, engine: Engine, *, sqlite_file: bool) -> None:
        self._engine = engine
        self._own: threading.local | None = threading.local() if sqlite_file else None
        self._readers: threading.local | None = (
            threading.local() if engine.dialect.name in _SERVERS else None
        )
        self.all: weakref.WeakSet[Hot] = weakref.WeakSet()
        self.readers: weakref.WeakSet[Hot] = weakref.WeakSet()
        self._readers_lock = threading.Lock()

    @property
    def sqlite(self) -> bool:
        """A file SQLite ledger: every lookup and write on the thread's own connection."""
        return self._own is not None

    @property
    def lookup_readers(self) -> bool:
        """A server database: some threads look up on connections of their own."""
        return self._readers is not None

    def own(self) -> Hot:
        """This thread's own connection to a file SQLite ledger, opened on first use."""
        local = self._own
        hot = getattr(local, "hot", None)
        if hot is None or hot.pid != os.getpid():
            conn = self._detached()  # the engine's connect-time PRAGMAs apply
            conn.execute("PRAGMA wal_autocheckpoint = 0")
            # After a burst the WAL is reset, not shrunk; keep at most 64 MB of it on disk.
            conn.execute("PRAGMA journal_size_limit = 67108864")
            hot = local.hot = self._keep(Hot(conn))  # type: ignore[union-attr]
        return hot  # type: ignore[no-any-return]

    def forget_own(self) -> None:
        """This thread's SQLite connection broke: it opens another next time."""
        self._own.hot = None  # type: ignore[union-attr]

    def reader(self) -> Hot | None:
        """A server database: this thread's own autocommit connection for lookups, opened on
        first use; None once LOOKUP_CONNECTIONS threads have one (the pool serves the rest)."""
        local = self._readers
        hot = getattr(local, "hot", None)
        pid = os.getpid()
        if hot is not None and hot.pid == pid:
            return hot  # type: ignore[no-any-return]
        with self._readers_lock:
            # Open ones of this process: not a forked parent's (kept, unused), not closed ones.
            if sum(h.pid == pid for h in self.readers) >= LOOKUP_CONNECTIONS:
                return None
            conn = self._detached()  # the engine's connect-time settings apply
            try:
                if self._engine.dialect.name == "postgresql":
                    conn.autocommit = True  # psycopg: a property
                else:
                    conn.autocommit(True)  # PyMySQL: a method (SET autocommit=1)
            except BaseException:
                conn.close()
                raise
            hot = local.hot = self._keep(Hot(conn))  # type: ignore[union-attr]
            self.readers.add(hot)
        return hot

    def drop_reader(self, hot: Hot) -> None:
        """A lookup connection that failed: closed; the thread opens another next time."""
        hot.close()
        self._readers.hot = None  # type: ignore[union-attr]
        self.readers.discard(hot)

    def close(self) -> None:
        """Close every thread's connection (each once its thread is between calls)."""
        for hot in list(self.all):
            hot.close()

    def _detached(self) -> Any:
        fairy = self._engine.raw_connection()
        conn = fairy.driver_connection
        fairy.detach()
        return conn

    def _keep(self, hot: Hot) -> Hot:
        self.all.add(hot)
        _process.hot_connections.add(hot)
        return hot


__all__ = ["LOOKUP_CONNECTIONS", "Hot", "ThreadConnections", "begin_write", "no_busy_wait"]
