"""Counts of what the cache did (hits, misses, bypasses and why, stores…), kept
per process and added to Redis in one batch every ``stats_interval`` seconds by
a thread of the process, off the request path; and flushed when the process
exits or the cache is closed, so that ``redis-wsgi-cache stats`` is exact."""

from __future__ import annotations

import atexit
import collections
import os
import threading
import typing as t
import weakref

if t.TYPE_CHECKING:
    from .store import RedisStore

_INSTANCES: weakref.WeakSet[Counters] = weakref.WeakSet()


class Counters:
    """Outcome counters of one process. :meth:`count` is a few hundred
    nanoseconds; a daemon thread (started on first use, and again in a forked
    child) adds the counts gathered so far to the ``<prefix>:stats`` hash every
    ``interval`` seconds, with one pipelined round trip. An interval of 0 turns
    counting off."""

    def __init__(self, store: RedisStore, interval: float) -> None:
        self.store = store
        self.interval = interval
        self._counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pid = 0
        # The flushing thread runs (in this process: a forked child starts its own).
        self._running = False
        _INSTANCES.add(self)

    def count(self, outcome: str, reason: str | None = None, amount: int = 1) -> None:
        """Count ``amount`` of ``outcome`` (``HIT``, ``BYPASS``, ``STORED``…), and
        with a ``reason``, of ``<outcome>:<reason>`` too."""
        if not self.interval or not amount:
            return
        with self._lock:
            self._counts[outcome] += amount
            if reason is not None:
                self._counts[f"{outcome}:{reason}"] += amount
        if not self._running:
            self._start()

    def flush(self) -> None:
        """Add the counts gathered so far to Redis now; on failure they are
        kept for the next flush."""
        with self._lock:
            counts, self._counts = self._counts, collections.Counter()
        if counts and not self.store.add_counts(counts):
            with self._lock:
                self._counts.update(counts)

    def close(self) -> None:
        """Flush, and stop the thread."""
        self.flush()
        self.interval = 0
        self._wake.set()

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            if self._pid:
                # A forked child: the parent's counts are the parent's to add.
                self._counts.clear()
            self._pid = os.getpid()
            self._running = True
        threading.Thread(target=self._run, name="redis-wsgi-cache counters", daemon=True).start()

    def _run(self) -> None:
        pid = os.getpid()
        while self.interval and self._pid == pid:
            self._wake.wait(self.interval)
            self.flush()

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._running = False


@atexit.register
def _flush_all() -> None:
    for counters in list(_INSTANCES):
        if counters._pid == os.getpid():
            counters.flush()


def _after_fork_in_child() -> None:
    for counters in list(_INSTANCES):
        counters._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
