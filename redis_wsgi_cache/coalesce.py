"""Request coalescing: while one request (the leader, holding the key's lock in
Redis) fetches a response, the others for the same key wait for it to be
stored instead of calling the app too. Works across threads, processes and
hosts, since the lock and the entry live in Redis.

A lock lives for a short lease (``store.LOCK_LEASE``), which a thread of each
process renews while the fetch holding it runs, for at most ``lock_timeout``
seconds. So a lock outlives its holder by at most one lease: a holder that died,
or a lock command that Redis ran after its sender had given up on it (a Redis
stall longer than ``socket_timeout``). A lock command that got no reply is also
released as soon as Redis answers again: twice, the second time after the
first was answered, so that the release comes after any command Redis had
queued while it stalled.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import typing as t
import weakref
from collections.abc import Mapping

from . import policy
from .effects import Sleep
from .policy import Reuse
from .store import LOCK_LEASE, Lock, Lookup, RedisStore, Slot

if t.TYPE_CHECKING:
    from .effects import Flow
    from .entry import CachedResponse
    from .settings import Settings
    from .store import Step, StoreSteps

logger = logging.getLogger("redis_wsgi_cache")

USABLE = frozenset({Reuse.FRESH, Reuse.STALE, Reuse.STALE_WHILE_REVALIDATE})
# Reasons a response was not stored that will hold for the next one too, so
# requests for the key should not queue behind a leader (Varnish's hit-for-miss);
# "error" is a fetch that raised.
LASTING_REASONS = frozenset(
    {
        "set-cookie",
        "no-store",
        "private",
        "vary-star",
        "partial-content",
        "status",
        "too-large",
        "error",
        "stream",
    }
)
FIRST_POLL = 0.002
LONGEST_POLL = 0.05
RENEW_EVERY = LOCK_LEASE / 4
# Seconds between attempts to release a lock whose command got no reply, and
# how long to go on trying while Redis does not answer.
RELEASE_LOST_EVERY = 0.1
GIVE_UP_LOST_AFTER = 600.0

_INSTANCES: weakref.WeakSet[Coalescer] = weakref.WeakSet()


class Coalescer:
    """The lock side of the cache: looking up with the intent to fetch, taking,
    keeping, waiting for and giving up the locks of the store's steps (steps
    and flows themselves, which the drivers run).

    Every lock it hands out must be given back with :meth:`release` or
    :meth:`saved` (which is harmless to do twice); until then a daemon thread
    (one per process, started on first use and again in a forked child) renews
    its lease through the blocking ``store``, for at most ``lock_timeout``
    seconds.
    """

    def __init__(self, store: RedisStore, settings: Settings) -> None:
        self.store = store
        self.steps: StoreSteps = store.steps
        self.settings = settings
        self._held: dict[int, Lock] = {}
        # Locks whose command got no reply: [lock, releases answered, since].
        self._lost: dict[int, list[t.Any]] = {}
        self._guard = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._pid = 0
        _INSTANCES.add(self)

    # -- taking -----------------------------------------------------------------

    def lookup(
        self, key: str, url: str, headers: Mapping[str, str], coalesce: bool = False
    ) -> Step[Lookup]:
        """:meth:`StoreSteps.lookup`, keeping any lock it took."""
        found = yield from self.steps.lookup(key, url, headers, coalesce)
        self._keep(found.role, found.lock)
        return found

    def try_lock(self, slot: Slot, seen: CachedResponse) -> Step[tuple[str, Lock | None]]:
        """:meth:`StoreSteps.try_lock`, keeping the lock if it was taken."""
        role, lock = yield from self.steps.try_lock(slot, seen)
        self._keep(role, lock)
        return role, (lock if role == "leader" else None)

    def _keep(self, role: str, lock: Lock | None) -> None:
        if lock is None:
            return
        self._start_keeper()
        with self._guard:
            if role == "leader":
                self._held[id(lock)] = lock
            elif role == "lost":
                # The command may have taken it after all: release it once
                # Redis answers again.
                self._lost[id(lock)] = [lock, 0, time.monotonic()]
        self._wake.set()

    # -- giving back --------------------------------------------------------------

    def release(self, lock: Lock | None, reason: str | None = None) -> Step[None]:
        """Give up ``lock``; for a reason in :data:`LASTING_REASONS`, mark its
        key hit-for-miss, so that requests go to the app without queueing."""
        if lock is None or lock.done:
            return
        self._forget(lock)
        hit_for_miss = self.settings.hit_for_miss if reason in LASTING_REASONS else 0
        yield from self.steps.release(lock, hit_for_miss)

    def streaming(self, lock: Lock | None, wait: float) -> None:
        """The fetch holding ``lock`` streams its body, which may never end:
        the requests waiting on it wait ``wait`` seconds more at most. Then,
        unless the fetch has stored or given up the lock by then, the key is
        marked hit-for-miss in the lock's place (they go to the app at once;
        the fetch may still store what it gets)."""
        if lock is None or lock.done:
            return
        with self._guard:
            if id(lock) not in self._held:
                return
            lock.release_at = time.monotonic() + wait
        self._wake.set()

    def saved(self, lock: Lock | None) -> None:
        """``lock`` was released by the save that stored its fetch."""
        if lock is not None:
            self._forget(lock)

    def _forget(self, lock: Lock) -> None:
        lock.done = True
        with self._guard:
            self._held.pop(id(lock), None)

    # -- waiting ------------------------------------------------------------------

    def wait_for_leader(
        self,
        key: str,
        url: str,
        headers: Mapping[str, str],
        request: policy.RequestPolicy,
    ) -> Flow[Lookup]:
        """Wait, at most ``lock_timeout`` seconds, until one of these, and say which:

        - the leader has stored an entry that serves this request: a ``hit``;
        - the key is hit-for-miss (the leader's response was not storable, or
          its fetch failed), Redis failed, or the wait timed out: role ``hfm``,
          ``failed``/``lost``, ``unavailable`` or ``timeout``, and the request
          should call the app on its own;
        - the lock is free again with nothing usable stored (the leader died or
          gave up): this request took the lock, role ``leader`` (and ``lock``).
        """
        for pause in self._polls():
            yield pause
            found = yield from self.lookup(key, url, headers, coalesce=True)
            if found.outcome == "unavailable" or found.role not in ("", "follower"):
                return found
            if found.entry is not None:
                if policy.reuse(found.entry, request, time.time()) in USABLE:
                    return found
                assert found.slot is not None
                role, lock = yield from self.try_lock(found.slot, found.entry)
                if role == "leader":
                    return Lookup(found.outcome, found.entry, found.slot, "leader", lock)
                if role in ("failed", "lost"):
                    return Lookup(found.outcome, found.entry, found.slot, role)
        return Lookup("miss", None, None, "timeout")

    def wait_for_fresh(
        self, slot: Slot, url: str, headers: Mapping[str, str]
    ) -> Flow[tuple[CachedResponse | None, Lock | None, str]]:
        """For a request that needs a response made after it arrived: wait, at
        most ``lock_timeout`` seconds, until one of these, and say which:

        - a fetch that started after it arrived stored its response: that
          entry, and ``collapsed``;
        - the lock is free: this request took it (the lock, and ``leader``),
          and fetches for the others;
        - the key is hit-for-miss (the last response could not be shared, or
          its fetch failed), Redis failed, or the wait timed out: neither, and
          the request calls the app on its own.

        A request that arrives while a fetch runs waits for the next one: at
        most one such fetch per key runs at a time, and each serves all that
        arrived before it started.
        """
        role, arrived, lock = yield from self.steps.join(slot, 0)
        self._keep(role, lock)
        if role != "follower":
            return None, lock, role
        for pause in self._polls():
            yield pause
            role, _, lock = yield from self.steps.join(slot, arrived)
            self._keep(role, lock)
            if role == "ready":
                found = yield from self.steps.lookup(slot.key, url, headers)
                if found.entry is not None and found.entry.started >= arrived:
                    return found.entry, None, "collapsed"
            elif role != "follower":
                return None, lock, role
            # A follower, or replaced again since: wait on.
        return None, None, "timeout"

    def _polls(self) -> t.Iterator[Sleep]:
        """The pause before each poll of a wait, longer each time (from
        ``FIRST_POLL`` to ``LONGEST_POLL``), until ``lock_timeout`` is over."""
        deadline = time.monotonic() + self.settings.lock_timeout
        delay = FIRST_POLL
        while (remaining := deadline - time.monotonic()) > 0:
            yield Sleep(min(delay, remaining))
            delay = min(delay * 2, LONGEST_POLL)

    # -- the keeper thread -------------------------------------------------------

    def close(self) -> None:
        """Stop the keeper thread (locks still held then expire with their lease)."""
        self._stop.set()
        self._wake.set()

    def _start_keeper(self) -> None:
        if self._pid == os.getpid() or self._stop.is_set():
            return
        with self._guard:
            if self._pid == os.getpid():
                return
            # In a forked child, the parent's locks are the parent's to keep.
            self._held.clear()
            self._lost.clear()
            self._pid = os.getpid()
            threading.Thread(
                target=self._keep_leases, name="redis-wsgi-cache lock keeper", daemon=True
            ).start()

    def _keep_leases(self) -> None:
        """While any lock is held or lost: renew the leases of held locks every
        ``RENEW_EVERY`` seconds (and stop renewing those older than
        ``lock_timeout``), mark hit-for-miss those of streams whose wait is
        over (:meth:`streaming`), and try to release lost ones every
        ``RELEASE_LOST_EVERY`` seconds until two releases were answered."""
        renewed = time.monotonic()  # the locks just taken have a whole lease
        while not self._stop.is_set():
            with self._guard:
                idle = not self._held and not self._lost
                pause = RELEASE_LOST_EVERY if self._lost else RENEW_EVERY
                release_at = min(
                    (lock.release_at for lock in self._held.values()), default=math.inf
                )
            if idle:
                self._wake.wait()
                self._wake.clear()
                renewed = time.monotonic()
                continue
            self._wake.wait(max(0.0, min(pause, release_at - time.monotonic())))
            self._wake.clear()
            now = time.monotonic()
            streams = []
            with self._guard:
                for number, lock in list(self._held.items()):
                    if lock.release_at <= now:
                        del self._held[number]
                        streams.append(lock)
                    elif now - lock.taken >= self.settings.lock_timeout:
                        del self._held[number]
                        logger.debug("stopped renewing %s after lock_timeout", lock.key)
                due = now - renewed >= RENEW_EVERY - RELEASE_LOST_EVERY / 2
                held = list(self._held.values()) if due else []
                for number, (_, _, since) in list(self._lost.items()):
                    if now - since >= GIVE_UP_LOST_AFTER:
                        del self._lost[number]
                lost = [record[0] for record in self._lost.values()]
            if streams:
                self.store.mark_hit_for_miss(streams, self.settings.hit_for_miss)
            if held:
                self.store.renew(held)
                renewed = now
            if lost and self.store.release_quietly(lost):
                with self._guard:
                    for lock in lost:
                        record = self._lost.get(id(lock))
                        if record is not None:
                            record[1] += 1
                            if record[1] >= 2:
                                del self._lost[id(lock)]


def _after_fork_in_child() -> None:
    # A thread of the parent may have held the guard when it forked.
    for coalescer in list(_INSTANCES):
        coalescer._guard = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
