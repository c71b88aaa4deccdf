"""In-process coordination: sample-slot counters and single-flight.

Slots: the k-th identical request within a run gets slot k. Counters are kept
per (run, namespace, request hash) for the life of the process, under a lock,
so two threads asking at once get k and k+1. Across processes, give each
process its own run or namespace (docs/replay.md).

Single-flight: concurrent identical misses (same namespace, hash and slot) make
one API call; the others wait for it and then read its answer from the ledger.
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

SlotKey = tuple[str | None, str, str]


class SlotCounter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._next: dict[SlotKey, int] = defaultdict(int)

    def take(self, run: str | None, namespace: str, request_hash: str) -> int:
        key = (run, namespace, request_hash)
        with self._lock:
            slot = self._next[key]
            self._next[key] = slot + 1
            return slot

    def reset(self, run: str | None = None, *, all_runs: bool = False) -> None:
        with self._lock:
            if all_runs:
                self._next.clear()
            else:
                for key in [k for k in self._next if k[0] == run]:
                    del self._next[key]


class SingleFlight:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inflight: dict[tuple[str, str, int], threading.Event] = {}

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
            event.set()


slots = SlotCounter()
flights = SingleFlight()


def _after_fork_in_child() -> None:
    # Locks held by other threads at fork time stay held forever in the child.
    slots._lock = threading.Lock()
    flights._lock = threading.Lock()
    flights._inflight.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def reset_slots(run: str | None = None, *, all_runs: bool = False) -> None:
    """Start the slot sequence of ``run`` (None: the process-wide run) again from slot 0."""
    slots.reset(run, all_runs=all_runs)
