"""Counts of what the cache did (hits, misses, stores…), kept per process and
added to Redis in one batch at most every ``stats_interval`` seconds, off the
request path, so that counting costs no request a round trip."""

from __future__ import annotations

import collections
import threading
import time
import typing as t

if t.TYPE_CHECKING:
    from .background import BackgroundPool
    from .store import RedisStore


class Counters:
    """Outcome counters of one process. :meth:`count` is a few hundred
    nanoseconds; when ``interval`` has passed, the counts gathered so far are
    handed to the background pool, which adds them to the ``<prefix>:stats``
    hash with one pipelined round trip. An interval of 0 turns counting off."""

    def __init__(self, store: RedisStore, pool: BackgroundPool, interval: float) -> None:
        self.store = store
        self.pool = pool
        self.interval = interval
        self._counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._due = time.monotonic() + interval

    def count(self, outcome: str) -> None:
        if not self.interval:
            return
        with self._lock:
            self._counts[outcome] += 1
            if time.monotonic() < self._due:
                return
            self._due = time.monotonic() + self.interval
        self.pool.submit(self.flush, "flush of the cache's counters")

    def flush(self) -> None:
        """Add the counts gathered so far to Redis now; on failure they are
        kept for the next flush."""
        with self._lock:
            counts, self._counts = self._counts, collections.Counter()
        if counts and not self.store.add_counts(counts):
            with self._lock:
                self._counts.update(counts)
