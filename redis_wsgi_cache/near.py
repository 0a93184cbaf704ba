"""An opt-in, in-process LRU cache of hot entries in front of Redis, bounded in entries
and bytes. It stays coherent across processes by dropping what the invalidations Redis
publishes name, and serves nothing while it cannot be sure it receives them."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import random
import threading
import time
import typing as t
import weakref
from collections import OrderedDict
from collections.abc import Mapping

import redis

from .entry import CachedResponse
from .keys import variant_id

logger = logging.getLogger("redis_wsgi_cache")

# Seconds one get_message may wait, between PINGs on the subscription's
# connection, of silence (no message, no PONG) that mean the connection is dead,
# and the range of the pause before resubscribing after an error.
LISTEN_TIMEOUT = 1.0
PING_EVERY = 2.0
DEAD_AFTER = 5.0
BACKOFF = (0.5, 1.0)
# The payload of an invalidation that drops everything (a purge of all URLs).
CLEAR_ALL = "*"

_INSTANCES: weakref.WeakSet[NearCache] = weakref.WeakSet()


def entry_size(entry: CachedResponse) -> int:
    """The bytes an entry counts for against ``max_bytes``: body, URL and header fields."""
    return (
        entry.body_length
        + len(entry.url)
        + sum(len(name) + len(value) for name, value in entry.headers)
    )


@dataclasses.dataclass
class _Record:
    """What the near cache holds for one primary key: the Vary names its
    entries were stored under and the ids of the variants held."""

    vary: tuple[str, ...]
    variants: set[str]


class NearCache:
    """Hot entries in process memory, in front of Redis.

    Entries are kept by primary key and, for a response with ``Vary``, by the
    variant the request's headers select (``""`` without Vary); a put for a key
    whose Vary names changed replaces everything held for that key. At most
    ``max_entries`` entries (each variant counts) and ``max_bytes`` bytes (see
    :func:`entry_size`) are held; the least recently used go first, and an entry
    larger than ``max_bytes`` on its own is not kept. :meth:`get` drops an entry
    whose freshness is over but otherwise leaves freshness to the caller.

    Coherence: a daemon thread subscribes to ``<prefix>:invalidate``, where
    every save and purge in Redis publishes the primary key it changed (``*``
    for all of them), and drops what each message names. The thread starts on
    the first :meth:`get` or :meth:`put`, and again (with an empty cache) in a
    process forked after that, such as a pre-forking server's worker. Only while
    the subscription is confirmed live is the cache :attr:`online`: otherwise
    :meth:`get` finds nothing and :meth:`put` keeps nothing. The subscriber
    PINGs every ``PING_EVERY`` seconds and takes ``DEAD_AFTER`` seconds without
    an answer as a dead connection. On any error it goes offline, empties the
    cache, logs one warning per outage and resubscribes after a pause; the
    cache is emptied again when the subscription is confirmed, since
    invalidations published in between were missed.

    Every invalidation received or made here, every :meth:`clear` and every
    change of :attr:`online` bumps :meth:`generation`. A caller reads it before
    looking an entry up in Redis and passes it to :meth:`put`, which ignores the
    entry if the generation has moved on since: an invalidation may have
    overtaken the lookup. All methods are thread-safe.
    """

    def __init__(self, client: redis.Redis, prefix: str, max_entries: int, max_bytes: int) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries={max_entries!r}: expected a whole number >= 1")
        if max_bytes < 1:
            raise ValueError(f"max_bytes={max_bytes!r}: expected a whole number >= 1")
        self.client = client
        self.channel = f"{prefix}:invalidate"
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, str], tuple[CachedResponse, int]] = OrderedDict()
        self._records: dict[str, _Record] = {}
        self._bytes = 0
        self._generation = 0
        self._online = False
        self._closed = False
        # The subscriber was started in this process (a forked child starts its own).
        self._started_here = False
        self._stop = threading.Event()
        _INSTANCES.add(self)

    @property
    def online(self) -> bool:
        """True only while the invalidation subscription is confirmed live."""
        return self._online and self._started_here

    def generation(self) -> int:
        """The count of invalidations, clears and changes of :attr:`online` so far."""
        return self._generation

    def __len__(self) -> int:
        """The number of entries held, each variant counted."""
        return len(self._entries)

    @property
    def held_bytes(self) -> int:
        """The bytes the entries held count for (see :func:`entry_size`)."""
        return self._bytes

    def get(
        self, key: str, headers: Mapping[str, str], now: float | None = None
    ) -> CachedResponse | None:
        """The entry held for ``key`` and the variant ``headers`` select, or None
        (and the entry dropped) once it is no longer fresh at ``now`` (the
        present by default)."""
        # Without the lock: each step is one atomic operation on a dict, and an
        # entry an invalidation drops meanwhile is not found (or not moved).
        if not self._started_here:
            with self._lock:
                self._start_subscriber()
        record = self._records.get(key)
        if record is None or not self._online:
            return None
        slot = (key, variant_id(record.vary, headers) if record.vary else "")
        held = self._entries.get(slot)
        if held is None:
            return None
        if held[0].ttl(time.time() if now is None else now) <= 0:
            with self._lock:
                if self._entries.get(slot) is held:
                    self._drop(slot)
            return None
        try:
            self._entries.move_to_end(slot)
        except KeyError:  # dropped meanwhile
            return None
        return held[0]

    def put(
        self, key: str, entry: CachedResponse, headers: Mapping[str, str], generation: int
    ) -> None:
        """Keep ``entry`` for ``key`` and the variant ``headers`` select, unless the
        cache is offline, ``generation`` is older than :meth:`generation`, the
        entry is no longer fresh or it is larger than ``max_bytes``."""
        size = entry_size(entry)
        variant = variant_id(entry.vary, headers) if entry.vary else ""
        with self._lock:
            self._start_subscriber()
            if (
                not self._online
                or generation < self._generation
                or size > self.max_bytes
                or entry.ttl(time.time()) <= 0
            ):
                return
            record = self._records.get(key)
            if record is not None and record.vary != entry.vary:
                self._drop_key(key)
                record = None
            if record is None:
                record = self._records[key] = _Record(entry.vary, set())
            slot = (key, variant)
            replaced = self._entries.pop(slot, None)
            if replaced is not None:
                self._bytes -= replaced[1]
            record.variants.add(variant)
            self._entries[slot] = (entry, size)
            self._bytes += size
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                # (popitem: a lookup, which takes no lock, may reorder meanwhile)
                evicted, (_, evicted_size) = self._entries.popitem(last=False)
                self._forget(evicted, evicted_size)

    def invalidate(self, key: str) -> None:
        """Drop everything held for the primary key ``key``, in this process only."""
        with self._lock:
            self._drop_key(key)
            self._generation += 1

    def clear(self) -> None:
        """Drop everything held, in this process only."""
        with self._lock:
            self._clear()

    def close(self) -> None:
        """Empty the cache for good and stop the subscriber, which ends within
        ``LISTEN_TIMEOUT`` seconds and closes its connection. Idempotent."""
        with self._lock:
            self._closed = True
            self._stop.set()
            self._online = False
            self._clear()

    # -- held under self._lock -------------------------------------------------

    def _drop(self, slot: tuple[str, str]) -> None:
        self._forget(slot, self._entries.pop(slot)[1])

    def _forget(self, slot: tuple[str, str], size: int) -> None:
        """Account for the entry of ``slot`` (of ``size``), no longer held."""
        self._bytes -= size
        record = self._records[slot[0]]
        record.variants.discard(slot[1])
        if not record.variants:
            del self._records[slot[0]]

    def _drop_key(self, key: str) -> None:
        record = self._records.pop(key, None)
        if record is not None:
            for variant in record.variants:
                self._bytes -= self._entries.pop((key, variant))[1]

    def _clear(self) -> None:
        self._entries.clear()
        self._records.clear()
        self._bytes = 0
        self._generation += 1

    def _start_subscriber(self) -> None:
        """Start the subscriber in this process, unless it runs already or the
        cache is closed. In a forked child, the parent's entries are dropped:
        invalidations may be missed until the child's own subscription is live."""
        if self._closed or self._started_here:
            return
        self._clear()
        self._online = False
        self._stop = threading.Event()
        self._started_here = True
        threading.Thread(
            target=self._subscribe,
            args=(self._stop,),
            name=f"redis-wsgi-cache near cache {self.channel}",
            daemon=True,
        ).start()

    def _after_fork_in_child(self) -> None:
        # A thread of the parent may have held the lock when it forked.
        self._lock = threading.Lock()
        self._started_here = False

    # -- the subscriber thread -------------------------------------------------

    def _subscribe(self, stop: threading.Event) -> None:
        """Listen for invalidations until ``stop`` is set, resubscribing after errors."""
        outage = False
        try:
            while not stop.is_set():
                pubsub = self.client.pubsub()
                try:
                    pubsub.subscribe(self.channel)
                    heard = pinged = time.monotonic()
                    while not stop.is_set():
                        message = pubsub.get_message(timeout=LISTEN_TIMEOUT)
                        now = time.monotonic()
                        if message is not None:
                            heard = now
                            if self._handle(message, stop) and outage:
                                logger.warning("near cache online again on %s", self.channel)
                                outage = False
                        if now - heard > DEAD_AFTER:
                            raise redis.ConnectionError(f"no answer to PING in {DEAD_AFTER:g}s")
                        if now - pinged >= PING_EVERY:
                            pubsub.ping()
                            pinged = now
                except Exception as error:
                    self._go_offline()
                    if not outage and not stop.is_set():
                        logger.warning(
                            "near cache offline (%s: %s); serving from Redis until %s"
                            " is subscribed again",
                            type(error).__name__,
                            error,
                            self.channel,
                        )
                    outage = True
                    stop.wait(random.uniform(*BACKOFF))
                finally:
                    with contextlib.suppress(Exception):
                        pubsub.close()
        finally:
            self._go_offline()

    def _handle(self, message: dict[str, t.Any], stop: threading.Event) -> bool:
        """Act on one message of the subscription; True if it confirmed the
        subscription, which makes the cache online (unless closed)."""
        kind = message["type"]
        if kind == "subscribe":
            with self._lock:
                if stop.is_set():
                    return False
                self._clear()
                self._online = True
            return True
        if kind == "unsubscribe":
            raise redis.ConnectionError(f"unsubscribed from {self.channel}")
        if kind == "message":
            data = message["data"]
            try:
                key = data.decode("utf-8") if isinstance(data, bytes) else str(data)
            except UnicodeDecodeError:
                key = CLEAR_ALL  # names no key of ours; drop all rather than guess
            with self._lock:
                if key == CLEAR_ALL:
                    self._clear()
                else:
                    self._drop_key(key)
                    self._generation += 1
        return False

    def _go_offline(self) -> None:
        with self._lock:
            self._online = False
            self._clear()


def _after_fork_in_child() -> None:
    for near in list(_INSTANCES):
        near._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
