"""In-process coordination: sample-slot counters and single-flight.

Slots: the k-th identical request within a run gets slot k. Counters are kept
per (run, namespace, request hash), under a lock, so two threads asking at once
get k and k+1. Across processes, give each process its own run or namespace
(docs/replay.md).

The counters are bounded: at most :data:`MAX_SLOT_KEYS` (run, namespace, hash)
keys are kept, least recently used first out. A request whose counter was dropped
starts again at slot 0 when it comes back (so in record mode it is served its
first stored sample again), and ``ledger.slots_evicted`` is logged once per
process. A run that draws more distinct sampled requests than that should call
``reset_slots(run)`` when it ends, or use a fresh run name.

Single-flight: concurrent identical misses (same namespace, hash and slot) make
one API call; the others wait for it and then read its answer from the ledger.

The instances live in ``process.state`` (``state.slots``, ``state.flights``).

Limiter: at most N API calls of one client in flight (TinyTroupe's
``max_concurrent_model_calls``); hits never take a place. One per client.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

from .log import logger

log = logger

SlotKey = tuple[str | None, str, str]
MAX_SLOT_KEYS = 100_000  # ~20 MB at most; far beyond any run we have seen


class SlotCounter:
    def __init__(self, max_keys: int = MAX_SLOT_KEYS) -> None:
        self._lock = threading.Lock()
        self._next: OrderedDict[SlotKey, int] = OrderedDict()
        self.max_keys = max_keys
        self.evicted = 0  # keys dropped so far (tests and diagnostics read it)

    def take(self, run: str | None, namespace: str, request_hash: str) -> int:
        key = (run, namespace, request_hash)
        with self._lock:
            slot = self._next.pop(key, 0)
            self._next[key] = slot + 1  # (re)inserted last: the most recently used
            if len(self._next) > self.max_keys:
                self._next.popitem(last=False)
                self.evicted += 1
                if self.evicted == 1:
                    log.warning("ledger.slots_evicted", max_keys=self.max_keys)
            return slot

    def __len__(self) -> int:
        return len(self._next)

    def reset(self, run: str | None = None, *, all_runs: bool = False) -> None:
        with self._lock:
            if all_runs:
                self._next.clear()
            else:
                for key in [k for k in self._next if k[0] == run]:
                    del self._next[key]

    def after_fork(self) -> None:
        self._lock = threading.Lock()


class SingleFlight:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inflight: dict[tuple[str, str, int], threading.Event] = {}
        # Flights ended so far (any key). A caller that looked the ledger up before a flight
        # ended and leads after it may find that flight's answer stored: calls.run re-checks.
        self.ended = 0

    @contextmanager
    def lead(self, key: tuple[str, str, int]) -> Iterator[bool]:
        """Yields True to the one caller that should call the API; the others wait, then get False."""
        with self._lock:
            event = self._inflight.get(key)
            leader = event is None
            if leader:
                event = self._inflight[key] = threading.Event()
        assert event is not None
        if not leader:
            event.wait()
            yield False
            return
        try:
            yield True
        finally:
            with self._lock:
                del self._inflight[key]
                self.ended += 1
            event.set()


def reset_slots(run: str | None = None, *, all_runs: bool = False) -> None:
    """Start the slot sequence of ``run`` (None: the process-wide run) again from slot 0."""
    from .process import state

    state.slots.reset(run, all_runs=all_runs)


class Limiter:
    """At most ``limit`` holders at once; the limit is read at each acquisition, so a
    changed setting takes effect at the next call (holders of the old one finish on it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._limit: int | None = None
        self._sem: threading.BoundedSemaphore | None = None

    @contextmanager
    def slot(self, limit: int | None) -> Iterator[None]:
        if limit is None or limit <= 0:
            yield
            return
        with self._lock:
            if self._sem is None or self._limit != limit:
                self._sem, self._limit = threading.BoundedSemaphore(limit), limit
            sem = self._sem
        with sem:
            yield
