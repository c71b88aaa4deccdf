"""Hit audit rows written in the background: ``hit_audit="background"`` (opt-in).

By default every call's audit row is committed before ``send_message`` returns. A cache
hit then spends most of its time writing its row: one insert into ``call_log`` and its
indexes, one commit. With ``LLM_LEDGER_HIT_AUDIT=background`` a hit only queues its row;
a daemon thread writes queued rows in batches, one transaction per batch, within
``interval`` seconds. Misses, errors and refusals, and every paid answer, are still
written before the call returns.

What it trades: rows still queued when the process is killed (``SIGKILL``, power loss,
``os._exit``) are lost; a hit costs nothing, so no paid answer is, only the row saying
it was served. A normal exit, :meth:`Ledger.close` and the reports, exports and copies
of the same process write the queue first. A batch the database refuses is written row
by row, and a row it still refuses goes to the spool, like any other.
"""

from __future__ import annotations

import atexit
import collections
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

import structlog

log = structlog.get_logger("llm_ledger")

DEFAULT_INTERVAL_S = 0.02
MAX_PENDING = 5_000  # beyond this the caller writes the queue itself (memory stays bounded)


class HitWriter:
    """A queue of audit records and the daemon thread that writes it via ``write_batch``."""

    def __init__(
        self,
        write_batch: Callable[[list[Any]], None],
        name: str,
        *,
        interval: float = DEFAULT_INTERVAL_S,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._write_batch = write_batch
        self.name = name
        self.interval = interval
        self.max_pending = max_pending
        self.written = 0  # rows written so far (tests read it)
        self._queue: collections.deque[Any] = collections.deque()
        self._flush_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        _writers.add(self)

    def put(self, record: Any) -> None:
        if self._pid != os.getpid():
            self._after_fork()
        if len(self._queue) >= self.max_pending:
            self.flush()  # the thread is behind: this caller pays, the queue stays bounded
        self._queue.append(record)
        thread = self._thread
        if thread is None or not thread.is_alive():
            self._start()
        self._wake.set()

    def pending(self) -> int:
        return len(self._queue) if self._pid == os.getpid() else 0

    def flush(self) -> None:
        """Write everything queued so far, on the calling thread."""
        if self._pid != os.getpid():
            self._after_fork()
            return
        with self._flush_lock:
            while self._queue:
                batch = []
                while self._queue and len(batch) < 1000:
                    batch.append(self._queue.popleft())
                self._write_batch(batch)
                self.written += len(batch)

    def close(self) -> None:
        """Stop the thread and write what is queued."""
        if self._pid != os.getpid():
            return
        thread = self._thread
        if thread is not None:
            self._stop.set()
            self._wake.set()
            thread.join(timeout=30)
            self._thread = None
            self._stop, self._wake = threading.Event(), threading.Event()
        self.flush()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(
                target=self._run, name=f"llm-ledger-hits:{self.name}", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        wake, stop = self._wake, self._stop
        while not stop.is_set():
            wake.wait()
            if stop.wait(self.interval):
                return
            wake.clear()
            try:
                self.flush()
            except Exception as exc:  # noqa: BLE001 -- keep the thread; rows stay queued
                log.error("ledger.hit_log_failed", db=self.name, error=str(exc)[:300])

    def _after_fork(self) -> None:
        """A forked child: the queued rows are the parent's to write; start empty."""
        self._queue = collections.deque()
        self._flush_lock, self._start_lock = threading.Lock(), threading.Lock()
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread = None
        self._pid = os.getpid()


_writers: weakref.WeakSet[HitWriter] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    for writer in list(_writers):
        try:
            writer.close()
        except Exception as exc:  # noqa: BLE001 -- never fail the host's exit
            log.error("ledger.hit_log_failed", db=writer.name, error=str(exc)[:300])
