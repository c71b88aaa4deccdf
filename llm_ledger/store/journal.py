"""A write-behind journal: a call's records are safe when ``append`` returns, written later.

Why: committing each call's rows before it returns costs most of a cache hit (one
transaction into ~6 B-trees, ~12 for a store) and serialises every caller on SQLite's
one write lock. Here the caller's thread appends the call's record to a local file
(one ``write()``, no ``fsync``: it survives a killed process, as WAL with
``synchronous=NORMAL`` does, not a power cut) and queues it; a daemon thread moves
queued records into the tables in batches, one transaction per batch, through
``write_batch``. ``write_batch`` must be idempotent by the record's call id (the
ledger's ``call_uuid`` is unique, as the spool's recovery already relies on): a record
may be written twice after a crash, never lost, and counted once.

Layout: one directory per ledger; each process appends to its own segment files
``<pid>-<token>-<n>.jsonl`` and holds an ``flock`` on the open one, so another process
can tell a live journal from a dead one. A segment is truncated once everything in it
is written, or deleted once a newer one took over; ``recover`` writes the complete
lines of dead processes' segments and deletes them (at the next open, by whichever
process opens the ledger first). What a record still pending in this process publishes
(``entries_of``: (key, value) pairs, e.g. its answers by cache key) is found by
``find(key)``, so a lookup sees an answer that is not in the tables yet.

The hook is narrow on purpose: records are JSON-able dicts, ``write_batch`` and
``entries_of`` are given by the repository. Nothing here knows the schema.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import fcntl
import json
import os
import secrets
import threading
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..log import logger as log
from .background import Debounced

Record = dict[str, Any]
WriteBatch = Callable[[list[Record]], None]

DEFAULT_INTERVAL_S = 0.02
SEGMENT_BYTES = 64 * 2**20  # start a new segment beyond this; the old one goes once written
MAX_PENDING = 20_000  # beyond this the caller writes the queue itself (memory stays bounded)
BATCH = 1_000


class Busy(Exception):
    """Raised by a ``write_now`` that cannot start at once (another writer holds the lock)."""


class _Segment:
    """One open segment file: appended records and how many of them are written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Locked ("alive", for recover()) before it gets the name recover() looks for.
        fresh = path.with_suffix(".new")
        self.fd = os.open(fresh, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(fresh, path)
        self.size = 0
        self.appended = 0
        self.written = 0

    def close(self, *, unlink: bool) -> None:
        if unlink:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        os.close(self.fd)


class Journal(Debounced):
    """This process's journal for one ledger: ``append`` on the caller, batches on a thread."""

    def __init__(
        self,
        directory: Path,
        write_batch: Callable[[list[Any]], None],
        *,
        entries_of: Callable[[Any], Iterable[tuple[Any, Any]]] | None = None,
        interval: float = DEFAULT_INTERVAL_S,
        segment_bytes: int = SEGMENT_BYTES,
        max_pending: int = MAX_PENDING,
        inline_batch: int | None = None,
        weight: Callable[[Any], int] | None = None,
        write_now: Callable[[list[Any]], None] | None = None,
        max_delay: float | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(
            name or f"llm-ledger-journal:{directory.name}", interval, max_delay=max_delay
        )
        self.directory = directory
        self.max_pending = max_pending
        self.inline_batch = inline_batch
        self._weight = weight
        self._inline_units = 0  # what appends since the last write weigh
        self._write_now = write_now or write_batch  # the caller's: raises Busy, never waits
        self._write_batch = write_batch
        self._entries_of = entries_of
        self._segment_bytes = segment_bytes
        self._lock = threading.Lock()  # appends, and the writer's bookkeeping
        self._flush_lock = threading.Lock()  # one writer at a time
        self._flushing: int | None = None  # the thread writing a batch now
        # (segment, what write_batch gets, the keys entries_of gave it)
        self._queue: collections.deque[tuple[_Segment, Any, tuple[Any, ...]]] = collections.deque()
        self._pending: dict[Any, Any] = {}  # key -> latest value appended with it
        self._outstanding: collections.Counter[Any] = collections.Counter()
        self._segments: list[_Segment] = []
        self._serial = 0
        self._token = secrets.token_hex(4)
        self.written = 0  # records written so far (tests read it)
        _journals.add(self)

    # --- the caller's side ------------------------------------------------------------

    def append(self, record: Record, item: Any = None) -> None:
        """Make ``record`` survive this process's death, then queue it for the tables.

        ``write_batch`` gets ``item`` if given (the object the record was made from, so the
        writer need not parse it back), else ``record``; ``recover`` always gets records.
        """
        line = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
        self.append_line(line, record if item is None else item)

    def append_line(self, line: str, item: Any) -> None:
        """``append`` for a caller that serialised the record itself (one JSON object).

        What ``entries_of(item)`` gives, (key, value) pairs, is what :meth:`find` answers
        until ``item`` is written (the latest value appended under a key)."""
        self._forked()  # a forked child: its own segments from here (see _after_fork)
        data = (line + "\n").encode()
        if len(self._queue) >= self.max_pending:
            self.flush()  # the writer is behind: this caller pays, memory stays bounded
        with self._lock:
            segment = self._current()
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(segment.fd, view) :]
            except BaseException:
                # A full disk mid-line: cut the partial line off so the next one starts clean
                # (the caller writes this record its own way).
                with contextlib.suppress(OSError):
                    os.ftruncate(segment.fd, segment.size)
                raise
            segment.size += len(data)
            segment.appended += 1
            keys: tuple[Any, ...] = ()
            if self._entries_of is not None:
                entries = tuple(self._entries_of(item))
                for key, value in entries:
                    self._pending[key] = value
                    self._outstanding[key] += 1
                keys = tuple(key for key, _ in entries)
            self._queue.append((segment, item, keys))
        # Weight 0: write within ``interval`` (another process may be waiting for it).
        # Weight 1: may wait for a pause in calls; a caller's burst writes itself.
        weight = 1 if self._weight is None else self._weight(item)
        self.poke(urgent=not weight)
        if self.inline_batch is not None and weight:
            self._inline_units += weight
            if self._inline_units >= self.inline_batch:
                self._flush_inline()

    def _flush_inline(self) -> None:
        """The caller writes a full batch itself, unless a write is under way or the database
        is busy (``write_now`` raises :class:`Busy`): a call never waits for another writer.
        In a burst of calls this beats the thread: two threads taking turns at the GIL cost
        each other more than the batch itself (docs/benchmarks.md). Never raises for the
        database: the records stay journaled and queued, and the thread tries again."""
        if not self._flush_lock.acquire(blocking=False):
            return
        try:
            self._flush(self._write_now)
        except Busy:
            pass  # the thread writes them (poked); a caller tries again a batch later
        except Exception as exc:  # noqa: BLE001 -- the call succeeded; its record is safe
            log.error(
                "ledger.journal_write_failed", journal=str(self.directory), error=str(exc)[:300]
            )
        finally:
            self._flush_lock.release()

    def find(self, key: Any) -> Any:
        """What ``entries_of`` gave for ``key`` in this process, not written yet (else None)."""
        return self._pending.get(key)

    def pending(self) -> int:
        """Records queued and not taken by a write yet."""
        return len(self._queue)

    def unwritten(self) -> bool:
        """Anything queued, or a batch being written now (taken off the queue, not yet
        committed): a reader that wants every record waits for :meth:`flush`."""
        return bool(self._queue) or self._flushing is not None

    def _current(self) -> _Segment:
        if not self._segments or self._segments[-1].size >= self._segment_bytes:
            self._serial += 1
            # Zero-padded: recover() writes a process's segments in name order = append order.
            name = f"{os.getpid()}-{self._token}-{self._serial:08d}.jsonl"
            self.directory.mkdir(
                mode=0o700, parents=True, exist_ok=True
            )  # another close may rmdir it
            self._segments.append(_Segment(self.directory / name))
        return self._segments[-1]

    # --- the writer's side ------------------------------------------------------------

    def flush(self) -> None:
        """Write everything queued so far (on the calling thread); retire written segments."""
        if self._forked() or self._flushing == threading.get_ident():
            return  # a read inside write_batch (e.g. a recovery's check) must not recurse
        with self._flush_lock:
            self._flush()

    def _flush(self, write: Callable[[list[Any]], None] | None = None) -> None:
        """Under ``_flush_lock``: write batches until the queue is empty (``_flushing`` says
        which thread does, meanwhile)."""
        self._inline_units = 0
        self._flushing = threading.get_ident()
        try:
            self._write_queue(write or self._write_batch)
        finally:
            self._flushing = None

    def _write_queue(self, write: Callable[[list[Any]], None]) -> None:
        while self._queue:
            batch: list[tuple[_Segment, Any, tuple[Any, ...]]] = []
            while self._queue and len(batch) < BATCH:
                batch.append(self._queue.popleft())
            try:
                write([item for _, item, _ in batch])
            except BaseException:
                self._queue.extendleft(reversed(batch))  # still journaled; retried later
                raise
            self.written += len(batch)
            with self._lock:
                for segment, _, keys in batch:
                    segment.written += 1
                    for key in keys:
                        self._outstanding[key] -= 1
                        if not self._outstanding[key]:
                            del self._outstanding[key], self._pending[key]
                self._retire()

    def _retire(self) -> None:
        """Under ``_lock``: drop what is fully written (older segments), empty the current one."""
        keep = []
        for segment in self._segments:
            done = segment.written == segment.appended
            if done and segment is not self._segments[-1]:
                segment.close(unlink=True)
            else:
                if done and segment.size:
                    os.ftruncate(segment.fd, 0)  # O_APPEND: the next write starts at 0
                    segment.size = segment.appended = segment.written = 0
                keep.append(segment)
        self._segments = keep

    def work(self) -> None:
        try:
            self.flush()
        except Exception as exc:  # noqa: BLE001 -- keep the thread; records stay journaled
            log.error(
                "ledger.journal_write_failed", journal=str(self.directory), error=str(exc)[:300]
            )

    def close(self) -> None:
        """Stop the thread, write what is queued, remove this process's segments."""
        if self._forked():
            return
        self.stop()
        self.flush()
        with self._lock:
            for segment in self._segments:
                segment.close(unlink=segment.written == segment.appended)
            self._segments = []
            with contextlib.suppress(OSError):  # only if empty: no other process's segments
                self.directory.rmdir()

    def _after_fork(self) -> None:
        """A forked child: the parent's records and segments are the parent's; start empty.

        The inherited descriptors are closed without unlocking anything: an ``flock`` is
        held by the open file, which the parent still has open.
        """
        super()._after_fork()
        for segment in self._segments:
            with contextlib.suppress(OSError):
                os.close(segment.fd)
        self._segments = []
        self._queue = collections.deque()
        self._pending = {}
        self._outstanding = collections.Counter()
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._flushing = None
        self._token = secrets.token_hex(4)


def read_segment(path: Path) -> list[Record]:
    """The complete lines of a segment (a last line without its newline was never returned).

    A line that is not JSON (an append cut short by a full disk and not truncated, whose
    caller then wrote its record the synchronous way) is skipped and logged, never fatal.
    """
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    records = []
    for number, line in enumerate(data[:end].splitlines(), 1):
        if not line:
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            log.error("ledger.journal_line_unreadable", segment=path.name, line=number)
    return records


def recover(directory: Path, write_batch: WriteBatch) -> int:
    """Write the segments of processes that died, then delete them; records written.

    A segment whose ``flock`` is still held belongs to a live process and is left alone.
    """
    if not directory.is_dir():
        return 0
    total = 0
    for path in sorted(directory.glob("*.jsonl")):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue  # its owner retired it meanwhile
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # alive
            try:
                if os.stat(path).st_ino != os.fstat(fd).st_ino:
                    continue
            except FileNotFoundError:
                continue  # another process recovered it while we waited for the lock
            records = read_segment(path)
            for start in range(0, len(records), BATCH):
                write_batch(records[start : start + BATCH])
            total += len(records)
            path.unlink()
            log.info("ledger.journal_recovered", segment=path.name, records=len(records))
        finally:
            os.close(fd)
    return total


_journals: weakref.WeakSet[Journal] = weakref.WeakSet()


@atexit.register
def _close_at_exit() -> None:
    for journal in list(_journals):
        try:
            journal.close()
        except Exception as exc:  # noqa: BLE001 -- never fail the host's exit; the file stays
            log.error(
                "ledger.journal_write_failed", journal=str(journal.directory), error=str(exc)[:300]
            )
