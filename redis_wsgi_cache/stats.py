"""Counts of what the cache did (hits, misses, bypasses and why, stores…), kept
per process and added to Redis in one batch every ``stats_interval`` seconds by
a thread of the process, off the request path; and flushed when the process
exits or the cache is closed, so that ``redis-wsgi-cache stats`` is exact.

The same batch keeps the history the dashboard charts: the counts per minute
(``<prefix>:stats:m:<minute>``, kept ``stats_history`` seconds), the URLs missed
most (a bounded summary of each process's misses, added to
``<prefix>:stats:missed:<hour>``), and a report of the process (its circuit
breaker and near cache) that expires when the process stops reporting. Nothing
here adds a Redis command to a request."""

from __future__ import annotations

import atexit
import collections
import os
import socket
import threading
import time
import typing as t
import weakref
from collections.abc import Callable, Mapping

if t.TYPE_CHECKING:
    from .store import RedisStore

_INSTANCES: weakref.WeakSet[Counters] = weakref.WeakSet()

# The most URLs each process keeps counts of between two flushes, and the most
# a window of missed URLs keeps in Redis.
MISSED_PER_PROCESS = 64
MISSED_KEPT = 256
# Seconds a window of missed URLs covers, and is kept.
MISSED_WINDOW = 3600
# The shortest time a process's report outlives its last flush; and how often
# an idle process (nothing counted since its last flush) still sends it.
REPORT_MIN_TTL = 15
REPORT_IDLE_EVERY = 5.0


def stats_key(prefix: str) -> str:
    """The hash of every count since counting began."""
    return f"{prefix}:stats"


def minute_key(prefix: str, minute: int) -> str:
    """The hash of the counts added during one minute (``minute``: seconds
    since the epoch, divided by 60)."""
    return f"{prefix}:stats:m:{minute}"


def missed_key(prefix: str, window: int) -> str:
    """The sorted set of the URLs missed most during one window
    (``window``: seconds since the epoch, divided by :data:`MISSED_WINDOW`)."""
    return f"{prefix}:stats:missed:{window}"


def processes_key(prefix: str) -> str:
    """The sorted set of the processes reporting, scored by their last report."""
    return f"{prefix}:stats:processes"


def process_key(prefix: str, name: str) -> str:
    """The hash of one process's report."""
    return f"{prefix}:stats:p:{name}"


def purges_key(prefix: str) -> str:
    """The list of recent purges, newest first (JSON objects)."""
    return f"{prefix}:purges"


def report_ttl(interval: float) -> int:
    """Seconds a process's report is kept after its last flush."""
    return max(REPORT_MIN_TTL, int(3 * interval) + 1)


class MissedUrls:
    """The URLs missed most, approximately, in bounded memory: the
    space-saving summary (Metwally, Agrawal, El Abbadi, 2005). It counts at most
    ``capacity`` URLs; a URL not counted yet takes the place of one with the
    lowest count, and that count. A count may so be too high by at most the
    count it took over, and a URL missed more often than that is never left
    out. :meth:`add` is a few dictionary operations (URLs are kept in buckets
    by count), and a look over the distinct counts (at most ``capacity``) only
    when the lowest count's last URL moves up."""

    def __init__(self, capacity: int = MISSED_PER_PROCESS) -> None:
        self.capacity = capacity
        self._counts: dict[str, int] = {}
        # URLs by count (dicts as insertion-ordered sets), and the lowest count.
        self._buckets: dict[int, dict[str, None]] = {}
        self._lowest = 0

    def __len__(self) -> int:
        return len(self._counts)

    def add(self, url: str, amount: int = 1) -> None:
        """Count ``amount`` misses of ``url``."""
        count = self._counts.pop(url, None)
        if count is not None:
            self._unbucket(url, count)
        elif len(self._counts) < self.capacity:
            count = 0
        else:
            count = self._lowest
            evicted = next(iter(self._buckets[count]))
            self._unbucket(evicted, count)
            del self._counts[evicted]
        new = count + amount
        self._counts[url] = new
        self._buckets.setdefault(new, {})[url] = None
        if new < self._lowest or self._lowest not in self._buckets:
            self._lowest = min(self._buckets)

    def _unbucket(self, url: str, count: int) -> None:
        bucket = self._buckets[count]
        del bucket[url]
        if not bucket:
            del self._buckets[count]

    def counts(self) -> dict[str, int]:
        """Every URL counted, with its count."""
        return dict(self._counts)


def totals(counts: Mapping[tuple[str, str | None], int]) -> collections.Counter[str]:
    """Counts by outcome and reason as the stats hash holds them: each outcome's
    total, and each ``<outcome>:<reason>``'s."""
    named: collections.Counter[str] = collections.Counter()
    for (outcome, reason), amount in counts.items():
        named[outcome] += amount
        if reason is not None:
            named[f"{outcome}:{reason}"] += amount
    return named


class Counters:
    """Outcome counters of one process. :meth:`count` is a few hundred
    nanoseconds; a daemon thread (started on first use, and again in a forked
    child) adds the counts gathered so far to Redis every ``interval`` seconds,
    with one pipelined round trip: to the ``<prefix>:stats`` hash, to the hash
    of the current minute (with ``history``), with the URLs missed most, and the
    process's report (what ``describe`` returns). An interval of 0 turns
    counting off."""

    def __init__(
        self,
        store: RedisStore,
        interval: float,
        history: int = 0,
        describe: Callable[[], Mapping[str, str | int | float]] | None = None,
    ) -> None:
        self.store = store
        self.interval = interval
        self.history = history
        self.describe = describe
        self.prefix = store.settings.prefix
        # Counts by outcome and reason (None: counted without one).
        self._counts: dict[tuple[str, str | None], int] = {}
        self._missed = MissedUrls()
        self._lock = threading.Lock()
        # Held while a flush sends: the report a closing process withdraws is
        # not sent again by a flush under way.
        self._sending = threading.RLock()
        self._wake = threading.Event()
        self._pid = 0
        self._started = time.time()
        self._reported = 0.0
        # The flushing thread runs (in this process: a forked child starts its own).
        self._running = False
        _INSTANCES.add(self)

    @property
    def name(self) -> str:
        """This process, as its report names it: host and process id."""
        return f"{socket.gethostname()}:{os.getpid()}"

    def count(self, outcome: str, reason: str | None = None, amount: int = 1) -> None:
        """Count ``amount`` of ``outcome`` (``HIT``, ``BYPASS``, ``STORED``…), and
        with a ``reason``, of ``<outcome>:<reason>`` too."""
        if not self.interval or not amount:
            return
        # (One dict operation under the lock: this is on every request's path.)
        pair = (outcome, reason)
        self._lock.acquire()
        try:
            # Read under the lock: a flush takes the dict away.
            counts = self._counts
            counts[pair] = counts.get(pair, 0) + amount
        finally:
            self._lock.release()
        if not self._running:
            self._start()

    def missed(self, url: str) -> None:
        """Count a miss of ``url`` among the URLs missed most (the miss itself
        is counted by :meth:`count`)."""
        if not self.interval:
            return
        with self._lock:
            self._missed.add(url)

    def flush(self) -> None:
        """Add the counts gathered so far to Redis now, with the process's
        report; on failure the counts are kept for the next flush."""
        with self._sending:
            with self._lock:
                counts, self._counts = self._counts, {}
                missed, self._missed = self._missed, MissedUrls()
            now = time.time()
            idle = not counts and not missed
            if idle and (not self._running or now - self._reported < REPORT_IDLE_EVERY):
                return
            if self._running:
                self._reported = now
            if not self.store.send_stats(self._commands(totals(counts), missed.counts(), now)):
                with self._lock:
                    for pair, amount in counts.items():
                        self._counts[pair] = self._counts.get(pair, 0) + amount
                    for url, amount in missed.counts().items():
                        self._missed.add(url, amount)

    def _commands(
        self, counts: Mapping[str, int], missed: Mapping[str, int], now: float
    ) -> list[tuple[t.Any, ...]]:
        """What one flush sends, in one pipeline."""
        commands: list[tuple[t.Any, ...]] = [
            ("HINCRBY", stats_key(self.prefix), name, number) for name, number in counts.items()
        ]
        if counts and self.history:
            minute = minute_key(self.prefix, int(now // 60))
            commands += [("HINCRBY", minute, name, number) for name, number in counts.items()]
            commands.append(("EXPIRE", minute, self.history + 60))
        if missed:
            window = missed_key(self.prefix, int(now // MISSED_WINDOW))
            commands += [("ZINCRBY", window, number, url) for url, number in missed.items()]
            commands += [
                ("ZREMRANGEBYRANK", window, 0, -MISSED_KEPT - 1),
                ("EXPIRE", window, 2 * MISSED_WINDOW),
            ]
        if self._running:
            commands += self._report(now)
        return commands

    def _report(self, now: float) -> list[tuple[t.Any, ...]]:
        """The commands that keep this process's report in Redis."""
        ttl = report_ttl(self.interval)
        name = self.name
        fields: dict[str, str | int | float] = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": round(self._started, 3),
            "seen": round(now, 3),
        }
        if self.describe is not None:
            fields.update(self.describe())
        report = process_key(self.prefix, name)
        registry = processes_key(self.prefix)
        pairs = [part for item in fields.items() for part in item]
        return [
            ("HSET", report, *pairs),
            ("EXPIRE", report, ttl),
            ("ZADD", registry, now, name),
            ("ZREMRANGEBYSCORE", registry, "-inf", now - ttl),
            ("EXPIRE", registry, ttl),
        ]

    def close(self) -> None:
        """Flush, withdraw the process's report, and stop the thread."""
        self.interval = 0
        self._wake.set()
        with self._sending:
            self.flush()
            if self._running and self._pid == os.getpid():
                self.store.send_stats(
                    [
                        ("DEL", process_key(self.prefix, self.name)),
                        ("ZREM", processes_key(self.prefix), self.name),
                    ]
                )
            self._running = False

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            if self._pid:
                # A forked child: the parent's counts are the parent's to add.
                self._counts.clear()
                self._missed = MissedUrls()
                self._started = time.time()
            self._pid = os.getpid()
            self._running = True
        threading.Thread(target=self._run, name="redis-wsgi-cache counters", daemon=True).start()

    def _run(self) -> None:
        pid = os.getpid()
        while self.interval and self._pid == pid:
            self._wake.wait(self.interval)
            if self.interval:
                self.flush()

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._sending = threading.RLock()
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
