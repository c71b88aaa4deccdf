"""The repository's background threads: work done shortly after it is asked for, off the
callers' threads. ``checkpoint.Checkpointer`` and ``writebehind.RecordWriter`` are the two kinds."""

from __future__ import annotations

import os
import threading
import time


class Debounced:
    """A daemon thread that runs :meth:`work` at most every ``interval`` seconds after a
    :meth:`poke`, so a burst of pokes costs one run.

    :meth:`stop` ends the thread (a later poke starts another). In a forked child the
    parent's thread, locks and events do not exist: the first poke there starts afresh.
    """

    def __init__(self, name: str, interval: float, *, max_delay: float | None = None) -> None:
        self.name = name
        self.interval = interval
        # None: run ``interval`` after the first poke. Else run once pokes stop for
        # ``interval`` (a burst is left to its caller), or ``max_delay`` after the first.
        self.max_delay = max_delay
        self._urgent = False  # a poke since the last run asked not to wait for a pause
        self._pid = os.getpid()
        self._start_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def work(self) -> None:
        """What the thread does after pokes (subclasses)."""

    def _thread_exit(self) -> None:
        """Called on the thread as it ends (subclasses release what it held)."""

    def _after_fork(self) -> None:
        """Forget the parent's thread; subclasses also drop what belongs to the parent."""
        self._start_lock = threading.Lock()
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread = None
        self._pid = os.getpid()
        self._urgent = False

    def _forked(self) -> bool:
        """True (after resetting) if this is a forked child's first use."""
        if self._pid == os.getpid():
            return False
        self._after_fork()
        return True

    def poke(self, *, urgent: bool = True) -> None:
        """Ask for a run of :meth:`work` within ``interval`` seconds; with ``max_delay`` set,
        a poke that is not ``urgent`` may wait for a pause in pokes, up to ``max_delay``."""
        self._forked()
        thread = self._thread
        if thread is None or not thread.is_alive():
            with self._start_lock:
                thread = self._thread
                if thread is None or not thread.is_alive():
                    self._thread = threading.Thread(
                        target=self._run, args=(self._wake, self._stop), name=self.name, daemon=True
                    )
                    self._thread.start()
        if urgent:
            self._urgent = True
        wake = self._wake
        if not wake.is_set():  # set() takes a lock every time; a burst needs it once
            wake.set()

    def _run(self, wake: threading.Event, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                wake.wait()
                deadline = time.monotonic() + (self.max_delay or 0.0)
                while True:
                    wake.clear()
                    if stop.wait(self.interval):
                        return
                    urgent, self._urgent = self._urgent, False
                    if (
                        self.max_delay is None
                        or urgent
                        or not wake.is_set()  # an interval without a poke: a pause
                        or time.monotonic() >= deadline
                    ):
                        break
                wake.clear()
                self.work()
        finally:
            self._thread_exit()

    def stop(self) -> bool:
        """Stop and join this process's thread; whether one was running."""
        thread = self._thread
        if thread is None or self._forked():
            return False
        self._stop.set()
        self._wake.set()
        thread.join(timeout=30)
        self._thread = None
        self._wake, self._stop = threading.Event(), threading.Event()  # a later poke restarts
        return True
