"""Purges that cost what they purge: walking the URL buckets and tag indexes the
save script keeps (see :mod:`redis_wsgi_cache.scripts`), in batches, and purging
(or marking stale) the keys they name; and the sweep that drops those indexes
once every entry they list has expired. Works on a standalone Redis and on Redis
Cluster alike: each purge is routed to the node of its key. Operators' verbs:
Redis errors are raised, not swallowed.

The indexes have no expiry, so that a Redis that evicts only keys with one
(``maxmemory-policy volatile-*``, or ``noeviction``) never evicts them. A Redis
that may evict any key (``allkeys-*``) may evict an index before the entries it
lists; there, purges by tag, prefix and of everything find what they purge by
scanning this prefix's keys instead, so that no purged response stays
servable."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import typing as t
import weakref
from collections.abc import Iterable, Iterator

from . import scripts
from .keys import (
    bucket_key,
    index_registries,
    key_of,
    member_target,
    primary_key,
    tag_index_key,
    tag_key_of,
)
from .near import CLEAR_ALL

if t.TYPE_CHECKING:
    from .settings import Settings

logger = logging.getLogger("redis_wsgi_cache")

# Index members read, and purges sent, per round trip.
BATCH = 1000
# The end of every index member that begins with a given URL or prefix.
_HIGHEST = b"\xff"
# Seconds between two passes of the sweep (by whichever process holds its
# claim), or while it finds members of evicted entries; the most index keys one
# pass drops of each kind, and the index members it checks.
SWEEP_EVERY = 2.0
SWEEP_SOON = 0.2
SWEEP_BATCH = 500
VERIFY_BATCH = 2000
# The most seconds closing waits for a pass of the sweep to end.
CLOSE_WAIT = 10.0
# The digest of a key, in its braces: what a scan of this prefix's keys matches.
_DIGEST_PATTERN = "?" * 32


class Index:
    """The purge verbs over one cache's indexes: each returns how many stored
    responses it affected, every Vary variant counted."""

    def __init__(self, client: t.Any, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.prefix = settings.prefix
        self.channel = f"{settings.prefix}:invalidate"
        self.url_registry, self.tag_registry = index_registries(settings.prefix)
        self._warned = False
        self._sweeper_pid = 0
        self._sweeper: threading.Thread | None = None
        self._stop = threading.Event()
        self._guard = threading.Lock()
        self._sweeping = threading.Lock()
        # Where the sweep's checks of the indexes go on from: a URL bucket and
        # its last member checked; a tag's rank in its registry, its digest and
        # the last score checked.
        self._bucket_cursor: tuple[str, bytes] = ("", b"")
        self._tag_cursor: tuple[int, str, bytes] = (0, "", b"")

    # -- purges ---------------------------------------------------------------

    def keys_of(self, url: str) -> list[str]:
        """The keys of the entries stored for the canonical ``url``: its own,
        and those that hold key material too (forwarding headers)."""
        return self._keys_of(url, self._keyed(url))

    def _keys_of(self, url: str, keyed: list[tuple[str, bytes]]) -> list[str]:
        return list(dict.fromkeys([primary_key(self.prefix, url), *self._keys(keyed)]))

    def _keyed(self, url: str) -> list[tuple[str, bytes]]:
        """The URL buckets' members for ``url``: its stores under its own key
        (``<url>\\0…``) and under others (``<url>\\n…``)."""
        low = f"{url}\x00".encode("utf-8", "surrogateescape")
        high = f"{url}\n".encode("utf-8", "surrogateescape") + _HIGHEST
        buckets = self._live_buckets().values()
        return [
            (bucket, member)
            for bucket in buckets
            for batch in self._range(bucket, low, high)
            for member in batch
        ]

    def purge_url(self, url: str, *, soft: bool = False) -> int:
        """Every entry stored for the canonical ``url``: under its own key, and
        under keys that hold key material too (forwarding headers)."""
        keyed = self._keyed(url)
        count = self._purge(self._keys_of(url, keyed), soft)
        if not soft:
            self._forget(keyed)
        return count

    def purge_prefix(self, prefix: str, *, soft: bool = False) -> int:
        """Every entry whose canonical URL starts with ``prefix``."""
        if self._may_evict_indexes():
            return self._scan("prefix", prefix, soft)
        low = prefix.encode("utf-8", "surrogateescape")
        count = 0
        for bucket in self._live_buckets().values():
            for members in self._range(bucket, low, paged=soft):
                count += self._purge(list(dict.fromkeys(self._keys(members))), soft)
                if not soft:
                    self._forget([(bucket, member) for member in members])
        return count

    def purge_tag(self, tag: str, *, soft: bool = False) -> int:
        """Every entry stored with ``tag``."""
        if self._may_evict_indexes():
            return self._scan("tag", tag, soft)
        index = tag_index_key(self.prefix, tag)
        count = 0
        for digests in self._pages(index, paged=soft):
            count += self._purge([key_of(digest.decode(), self.prefix) for digest in digests], soft)
            if not soft:
                self.client.zrem(index, *digests)
        return count

    def purge_all(self, *, soft: bool = False) -> int:
        """Every entry this cache stored (under this prefix only)."""
        if self._may_evict_indexes():
            count = self._scan("all", "", soft)
        else:
            count = 0
            buckets = self._live_buckets()
            for bucket in buckets.values():
                for members in self._pages(bucket, paged=soft):
                    count += self._purge(list(dict.fromkeys(self._keys(members))), soft)
                    if not soft:
                        self.client.zrem(bucket, *members)
            if buckets and not soft:
                self.client.eval(
                    scripts.UNREGISTER_EMPTY,
                    1 + len(buckets),
                    self.url_registry,
                    *buckets.values(),
                    *buckets,
                )
        if not soft:
            self.client.publish(self.channel, CLEAR_ALL)
        return count

    # -- health ---------------------------------------------------------------

    def usage(self) -> tuple[float, int, int]:
        """Seconds a PING took, how many URLs the index lists (an entry stored
        again within a bucket's span counts twice), and the memory Redis uses
        (summed over the nodes of a cluster)."""
        started = time.perf_counter()
        self.client.ping()
        latency = time.perf_counter() - started
        memory = sum(int(node.get("used_memory", 0)) for node in self.nodes_info())
        pipeline = self.client.pipeline(transaction=False)
        for bucket in self._live_buckets().values():
            pipeline.zcard(bucket)
        return latency, sum(pipeline.execute()), memory

    # -- the sweep --------------------------------------------------------------

    def sweep_soon(self) -> None:
        """Make sure this process takes its turn at sweeping the indexes (a
        daemon thread, started on first use and again in a forked child)."""
        if self._sweeper_pid == os.getpid() or self._stop.is_set():
            return
        with self._guard:
            if self._sweeper_pid == os.getpid():
                return
            self._sweeper_pid = os.getpid()
            self._sweeper = threading.Thread(
                target=_keep_sweeping,
                args=(weakref.ref(self), self._stop),
                name="redis-wsgi-cache sweep",
                daemon=True,
            )
            self._sweeper.start()

    def close(self) -> None:
        """Stop the sweeping thread (it finishes the pass it is in)."""
        self._stop.set()
        if self._sweeper is not None and self._sweeper is not threading.current_thread():
            self._sweeper.join(CLOSE_WAIT)

    def sweep(self, now: float | None = None, budget: int = VERIFY_BATCH) -> tuple[int, int]:
        """One pass of the sweep: drop the URL buckets whose entries have all
        expired and clear the tag indexes of their expired entries (a sorted set
        left empty goes with its last member); then check up to ``budget``
        index members against Redis, and remove those whose entry has gone
        before its time (evicted) or, in a URL bucket, was stored again since
        (the later store has a member of its own). How many members were
        checked, and how many indexes and members went."""
        with self._sweeping:
            return self._sweep(time.time() if now is None else now, budget)

    def _sweep(self, now: float, budget: int) -> tuple[int, int]:
        removed = 0
        buckets = self.client.zrangebyscore(self.url_registry, "-inf", now, 0, SWEEP_BATCH)
        if buckets:
            # No save adds to a bucket whose span is over: dropping it is safe.
            pipeline = self.client.pipeline(transaction=False)
            for member in buckets:
                pipeline.delete(bucket_key(self.prefix, member.decode()))
            pipeline.execute()
            removed += self.client.zrem(self.url_registry, *buckets)
        digests = self.client.zrangebyscore(self.tag_registry, "-inf", now, 0, SWEEP_BATCH)
        if digests:
            pipeline = self.client.pipeline(transaction=False)
            for digest in digests:
                pipeline.zremrangebyscore(tag_key_of(self.prefix, digest.decode()), "-inf", now)
            pipeline.execute()
            # A tag stored again meanwhile has a later expiry: it stays listed.
            self.client.eval(scripts.UNREGISTER, 1, self.tag_registry, repr(now), *digests)
            removed += len(digests)
        checked = 0
        for walk in (self._verify_buckets, self._verify_tags):
            seen, gone = walk(budget // 2)
            checked += seen
            removed += gone
        return checked, removed

    def _verify_buckets(self, budget: int) -> tuple[int, int]:
        """Check URL bucket members, from where the last check ended."""
        checked = removed = 0
        buckets = sorted(self._live_buckets().values())
        wrapped = self._bucket_cursor == ("", b"")
        while checked < budget and buckets:
            bucket, after = self._bucket_cursor
            if bucket not in buckets:
                later = [name for name in buckets if name > bucket]
                if not later:
                    # At the end: go round once more from the first bucket.
                    self._bucket_cursor = ("", b"")
                    if wrapped:
                        break
                    wrapped = True
                    continue
                bucket, after = later[0], b""
            low = b"(" + after if after else b"-"
            members = self.client.zrangebylex(bucket, low, b"+", 0, budget - checked)
            if not members:
                self._bucket_cursor = (bucket + "\x00", b"")  # the next one
                continue
            self._bucket_cursor = (bucket, members[-1])
            targets = [
                member_target(m.decode("utf-8", "surrogateescape"), self.prefix) for m in members
            ]
            pipeline = self.client.pipeline(transaction=False)
            for key, _ in targets:
                pipeline.hmget(key, "v", "y")
            gone = [
                member
                for member, (_, stamp), found in zip(
                    members, targets, pipeline.execute(raise_on_error=False), strict=True
                )
                if _gone(found, stamp)
            ]
            checked += len(members)
            if gone:
                removed += self.client.zrem(bucket, *gone)
        return checked, removed

    def _verify_tags(self, budget: int) -> tuple[int, int]:
        """Check tag index members, from where the last check ended."""
        checked = removed = 0
        wrapped = self._tag_cursor == (0, "", b"")
        while checked < budget:
            rank, digest, after = self._tag_cursor
            if not digest:
                found = self.client.zrange(self.tag_registry, rank, rank)
                if not found:
                    # At the end: go round once more from the first tag.
                    self._tag_cursor = (0, "", b"")
                    if wrapped:
                        break
                    wrapped = True
                    continue
                digest, after = found[0].decode(), b""
            index = tag_key_of(self.prefix, digest)
            low = b"(" + after if after else b"-inf"
            members = self.client.zrangebyscore(
                index, low, "+inf", 0, budget - checked, withscores=True, score_cast_func=bytes
            )
            if not members:
                self._tag_cursor = (rank + 1, "", b"")
                continue
            self._tag_cursor = (rank, digest, members[-1][1])
            pipeline = self.client.pipeline(transaction=False)
            for member, _ in members:
                pipeline.exists(key_of(member.decode(), self.prefix))
            gone = [
                value
                for (member, score), exists in zip(members, pipeline.execute(), strict=True)
                if not exists
                for value in (member, score)
            ]
            checked += len(members)
            if gone:
                removed += int(self.client.eval(scripts.FORGET, 1, index, *gone))
        return checked, removed

    def _sweep_turn(self, token: str, pause: float, evicted: int) -> tuple[float, int]:
        """One turn of the sweeping thread: a pass of the sweep, if this process
        holds the claim (or takes it). When to come again, and Redis's count of
        evicted keys now."""
        claim = f"{self.url_registry}:sweep"
        try:
            hold = int((SWEEP_EVERY + pause) * 1000)
            if not self.client.eval(scripts.CLAIM, 1, claim, token, hold):
                return SWEEP_EVERY, evicted
            seen = sum(int(node.get("evicted_keys", 0)) for node in self.nodes_info("stats"))
            evicting = seen != evicted
            budget = VERIFY_BATCH if evicting or pause == SWEEP_SOON else 0
            checked, removed = self.sweep(budget=budget)
        except Exception as error:
            # Off the request path: a Redis away now is swept next time.
            logger.debug("the index sweep failed: %s", error)
            return SWEEP_EVERY, evicted
        busy = budget > 0 and removed * 8 >= checked > 0
        return (SWEEP_SOON if evicting or busy else SWEEP_EVERY), seen

    # -- reading the indexes ----------------------------------------------------

    def _live_buckets(self) -> dict[str, str]:
        """The URL buckets that may list an entry still stored, by their member
        in the registry."""
        members = self.client.zrangebyscore(self.url_registry, f"({time.time()}", "+inf")
        return {member.decode(): bucket_key(self.prefix, member.decode()) for member in members}

    def _pages(self, index: str, paged: bool = True) -> Iterator[list[bytes]]:
        """The members of the sorted set ``index``, in batches. Without
        ``paged``, each batch is read from the start again: the caller removes
        what it got."""
        start = 0
        while batch := self.client.zrange(index, start, start + BATCH - 1):
            yield batch
            if paged:
                start += BATCH

    def _range(
        self, bucket: str, low: bytes, high: bytes | None = None, paged: bool = True
    ) -> Iterator[list[bytes]]:
        """A bucket's members from ``low`` to ``high`` (by default, to every one
        that begins with ``low``), in batches (``paged`` as for :meth:`_pages`)."""
        high = low + _HIGHEST if high is None else high
        offset = 0
        while batch := self.client.zrangebylex(
            bucket, b"[" + low, b"[" + high, start=offset, num=BATCH
        ):
            yield batch
            if paged:
                offset += len(batch)

    def _keys(self, members: Iterable[bytes | tuple[str, bytes]]) -> list[str]:
        """The keys URL bucket members name."""
        return [
            member_target(
                (member[1] if isinstance(member, tuple) else member).decode(
                    "utf-8", "surrogateescape"
                ),
                self.prefix,
            )[0]
            for member in members
        ]

    def _forget(self, members: list[tuple[str, bytes]]) -> None:
        """Drop purged entries' members from their buckets, one command a
        bucket."""
        by_bucket: dict[str, list[bytes]] = {}
        for bucket, member in members:
            by_bucket.setdefault(bucket, []).append(member)
        if by_bucket:
            pipeline = self.client.pipeline(transaction=False)
            for bucket, names in by_bucket.items():
                pipeline.zrem(bucket, *names)
            pipeline.execute()

    # -- purging ------------------------------------------------------------------

    def _purge(self, keys: list[str], soft: bool) -> int:
        """Purge (or mark stale) ``keys`` in pipelined batches; the count of
        responses affected."""
        count = 0
        for start in range(0, len(keys), BATCH):
            now = repr(time.time())
            pipeline = self.client.pipeline(transaction=False)
            for key in keys[start : start + BATCH]:
                if soft:
                    pipeline.execute_command(
                        "EVAL",
                        scripts.SOFTEN,
                        1,
                        key,
                        self.channel,
                        now,
                        self.settings.keep,
                        self.settings.grace,
                    )
                else:
                    pipeline.execute_command("EVAL", scripts.PURGE, 1, key, self.channel, now)
            count += sum(int(reply) for reply in pipeline.execute())
        return count

    # -- when Redis may evict the indexes -------------------------------------------

    def nodes_info(self, section: str = "memory") -> list[dict[str, t.Any]]:
        """An ``INFO`` section of Redis, or of each node of a cluster."""
        info = self.client.info(section)
        if not any(isinstance(value, dict) for value in info.values()):
            return [info]
        return [node for node in info.values() if isinstance(node, dict)]

    def _may_evict_indexes(self) -> bool:
        """Whether Redis may evict keys without an expiry (the indexes) when
        full: ``maxmemory`` set, with an ``allkeys-*`` policy (or one a node
        does not say)."""
        risky = [
            str(node.get("maxmemory_policy", "unknown"))
            for node in self.nodes_info()
            if int(node.get("maxmemory", 1) or 0) > 0
            and not str(node.get("maxmemory_policy", "")).startswith(("volatile-", "noeviction"))
        ]
        if risky and not self._warned:
            self._warned = True
            logger.warning(
                "Redis may evict the purge indexes when full (maxmemory-policy %s): purges by"
                " tag, prefix and all scan this prefix's keys to stay exact; a"
                " volatile-* policy (volatile-lru) keeps them and their cost in proportion"
                " to what they purge",
                risky[0],
            )
        return bool(risky)

    def _scan(self, kind: str, value: str, soft: bool) -> int:
        """Purge every key of this prefix whose response is of the tag, or
        under the URL prefix, ``value`` (``kind``: ``tag``, ``prefix`` or
        ``all``), found by scanning the keyspace of Redis, or of each master of
        a cluster, a batch at a time in a script."""
        pattern = key_of(_DIGEST_PATTERN, self.prefix)
        nodes = self.client.get_primaries() if hasattr(self.client, "get_primaries") else [None]
        count = 0
        for node in nodes:
            target = {} if node is None else {"target_nodes": node}
            cursor: bytes | int = 0
            while True:
                cursor, keys = self.client.execute_command(
                    "EVAL", scripts.SCAN, 0, cursor, pattern, BATCH, kind, value, **target
                )
                count += self._purge([key.decode() for key in keys], soft)
                if int(cursor) == 0:
                    break
        return count


def _keep_sweeping(ref: weakref.ref[Index], stop: threading.Event) -> None:
    """The sweeping thread of a process: a turn every ``SWEEP_EVERY`` seconds,
    or ``SWEEP_SOON`` while Redis evicts or the last turn found members of
    entries gone; until the index is closed, or no longer used."""
    pid = os.getpid()
    token = f"{socket.gethostname()}:{pid}:{id(ref)}"
    pause, evicted = SWEEP_SOON, -1
    while not stop.wait(pause):
        index = ref()
        if index is None or index._sweeper_pid != pid:
            return
        pause, evicted = index._sweep_turn(token, pause, evicted)
        del index


def _gone(found: object, stamp: str) -> bool:
    """Whether a URL bucket member's entry has gone: the key holds none (nor a
    Vary record) or another type, or holds a later store of it (which has a
    member of its own)."""
    if not isinstance(found, list):
        return True  # not a hash: not ours
    meta, record = found
    if meta is None:
        return record is None
    parts = meta.split(b";", 2)
    return len(parts) < 3 or parts[1].decode("ascii", "replace") != stamp
