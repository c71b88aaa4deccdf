"""Process-wide state, in one place, and what a forked child does with it.

Everything the library keeps for the life of a process lives on :data:`state`: the
shared ledgers (one engine per database), every hot SQLite connection, the locks of
recovery and of the spool, the background hit writers (flushed at exit), the sample-slot
counters and the single-flight table. One ``os.register_at_fork`` hook resets it in a
forked child: a lock another thread held at fork time would never be released there,
and SQLite connections and pooled sockets must not cross a fork (the parent's are kept,
unused and never closed, so the parent is not disturbed).
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

from .flight import SingleFlight, SlotCounter


class State:
    """The library's process-wide state (see the module docstring)."""

    def __init__(self) -> None:
        self.ledgers: dict[tuple[str, str | None], Any] = {}  # repository.open_ledger
        self.ledgers_lock = threading.Lock()
        self.recover_lock = threading.Lock()  # one spool recovery at a time
        self.spool_lock = threading.Lock()  # one append at a time
        # Claimed spool files this process holds flock'ed (spool.claim), and their descriptors.
        self.spool_claims: dict[Any, int] = {}
        self.live_ledgers: weakref.WeakSet[Any] = weakref.WeakSet()  # closed at exit
        self.hot_connections: weakref.WeakSet[Any] = weakref.WeakSet()  # every thread's SQLite
        self.inherited: list[Any] = []  # a forked child's copies of the parent's connections
        self.hit_writers: weakref.WeakSet[Any] = weakref.WeakSet()  # flushed at exit
        self.slots = SlotCounter()
        self.flights = SingleFlight()

    def after_fork_in_child(self) -> None:
        self.ledgers_lock = threading.Lock()
        self.recover_lock = threading.Lock()
        self.spool_lock = threading.Lock()
        self.spool_claims = {}  # the parent's recoveries, not the child's (the locks are shared)
        self.slots.after_fork()
        self.flights = SingleFlight()  # the parent's waiters do not exist here
        # Closing them here would be closing the parent's SQLite handles: keep them, unused.
        self.inherited.extend(self.hot_connections)
        for ledger in self.ledgers.values():
            ledger.engine.dispose(close=False)
        self.ledgers.clear()
        # Hit writers and checkpointers notice the fork themselves on first use
        # (background.Debounced._forked): their queues are the parent's to write.


state = State()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: state.after_fork_in_child())
