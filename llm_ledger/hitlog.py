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
import threading
from collections.abc import Callable
from typing import Any

from . import process
from .background import Debounced
from .log import logger

log = logger

DEFAULT_INTERVAL_S = 0.02
MAX_PENDING = 5_000  # beyond this the caller writes the queue itself (memory stays bounded)


class HitWriter(Debounced):
    """A queue of audit records and the daemon thread that writes it via ``write_batch``."""

    def __init__(
        self,
        write_batch: Callable[[list[Any]], None],
        name: str,
        *,
        interval: float = DEFAULT_INTERVAL_S,
        max_pending: int = MAX_PENDING,
    ) -> None:
        super().__init__(f"llm-ledger-hits:{name}", interval)
        self._write_batch = write_batch
        self.db = name
        self.max_pending = max_pending
        self.written = 0  # rows written so far (tests read it)
        self._queue: collections.deque[Any] = collections.deque()
        self._flush_lock = threading.Lock()
        process.state.hit_writers.add(self)

    def put(self, record: Any) -> None:
        self._forked()
        if len(self._queue) >= self.max_pending:
            self.flush()  # the thread is behind: this caller pays, the queue stays bounded
        self._queue.append(record)
        self.poke()

    def pending(self) -> int:
        self._forked()
        return len(self._queue)

    def flush(self) -> None:
        """Write everything queued so far, on the calling thread."""
        if self._forked():
            return
        with self._flush_lock:
            while self._queue:
                batch: list[Any] = []
                while self._queue and len(batch) < 1000:
                    batch.append(self._queue.popleft())
                self._write_batch(batch)
                self.written += len(batch)

    def work(self) -> None:
        try:
            self.flush()
        except Exception as exc:  # noqa: BLE001 -- keep the thread; rows stay queued
            log.error("ledger.hit_log_failed", db=self.db, error=str(exc)[:300])

    def close(self) -> None:
        """Stop the thread and write what is queued."""
        if self._forked():
            return
        self.stop()
        self.flush()

    def _after_fork(self) -> None:
        """A forked child: the queued rows are the parent's to write; start empty."""
        super()._after_fork()
        self._queue = collections.deque()
        self._flush_lock = threading.Lock()


@atexit.register
def _flush_at_exit() -> None:
    for writer in list(process.state.hit_writers):
        try:
            writer.close()
        except Exception as exc:  # noqa: BLE001 -- never fail the host's exit
            log.error("ledger.hit_log_failed", db=writer.db, error=str(exc)[:300])
