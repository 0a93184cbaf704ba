"""Purges that cost what they purge: walking the URL and tag indexes the save
script keeps (see :mod:`redis_wsgi_cache.scripts`), in batches, and purging (or
marking stale) the keys they name. Never a SCAN of the keyspace. Works on a
standalone Redis and on Redis Cluster alike: each purge is routed to the node of
its key. Operators' verbs: Redis errors are raised, not swallowed."""

from __future__ import annotations

import time
import typing as t
from collections.abc import Iterable, Iterator

from . import scripts
from .keys import index_member, primary_key, tag_index_key, url_index_keys
from .near import CLEAR_ALL

if t.TYPE_CHECKING:
    from .settings import Settings

# Index members read, and purges sent, per round trip.
BATCH = 1000
# The end of every index member that begins with a given URL or prefix.
_HIGHEST = b"\xff"


class Index:
    """The purge verbs over one cache's indexes: each returns how many stored
    responses it affected, every Vary variant counted."""

    def __init__(self, client: t.Any, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.channel = f"{settings.prefix}:invalidate"
        self.urls, self.expiry = url_index_keys(settings.prefix)

    def keys_of(self, url: str) -> list[str]:
        """The primary keys of the entries stored for the canonical ``url``,
        whatever other key material (forwarding headers) they hold."""
        return self._keys_of(url, self._of(url))

    def _keys_of(self, url: str, members: list[bytes]) -> list[str]:
        return list(dict.fromkeys([primary_key(self.settings.prefix, url), *_keys(members)]))

    def _of(self, url: str) -> list[bytes]:
        low = index_member(url, "").encode("utf-8", "surrogateescape")
        return [member for batch in self._range(low, low + _HIGHEST) for member in batch]

    def purge_url(self, url: str, *, soft: bool = False) -> int:
        """Every entry stored for the canonical ``url``, whatever other key
        material (forwarding headers) it was stored with."""
        members = self._of(url)
        count = self._purge(self._keys_of(url, members), soft)
        if not soft:
            self._forget(members)
        return count

    def purge_prefix(self, prefix: str, *, soft: bool = False) -> int:
        """Every entry whose canonical URL starts with ``prefix``."""
        low = prefix.encode("utf-8", "surrogateescape")
        count = 0
        for members in self._range(low, low + _HIGHEST, paged=soft):
            count += self._purge(list(dict.fromkeys(_keys(members))), soft)
            if not soft:
                self._forget(members)
        return count

    def purge_tag(self, tag: str, *, soft: bool = False) -> int:
        """Every entry stored with ``tag``."""
        index = tag_index_key(self.settings.prefix, tag)
        count = 0
        for keys in self._pages(index):
            count += self._purge([key.decode() for key in keys], soft)
        if not soft:
            self.client.delete(index)
        return count

    def purge_all(self, *, soft: bool = False) -> int:
        """Every entry the index knows of: all this cache stored (under this
        prefix only)."""
        count = 0
        for members in self._pages(self.urls):
            count += self._purge(list(dict.fromkeys(_keys(members))), soft)
        if not soft:
            self.client.delete(self.urls, self.expiry)
            self.client.publish(self.channel, CLEAR_ALL)
        return count

    def usage(self) -> tuple[float, int, int]:
        """Seconds a PING took, how many URLs are stored, and the memory Redis
        uses (summed over the nodes of a cluster)."""
        started = time.perf_counter()
        self.client.ping()
        latency = time.perf_counter() - started
        info = self.client.info("memory")
        if "used_memory" in info:
            memory = int(info["used_memory"])
        else:
            nodes = [node for node in info.values() if isinstance(node, dict)]
            memory = sum(int(node.get("used_memory", 0)) for node in nodes)
        return latency, int(self.client.zcard(self.urls)), memory

    def _pages(self, index: str) -> Iterator[list[bytes]]:
        """The members of the sorted set ``index``, in batches."""
        start = 0
        while batch := self.client.zrange(index, start, start + BATCH - 1):
            yield batch
            start += BATCH

    def _range(self, low: bytes, high: bytes, paged: bool = True) -> Iterator[list[bytes]]:
        """The URL index members from ``low`` to ``high``, in batches. Without
        ``paged``, each batch is read from the start again: the caller removes
        what it got."""
        offset = 0
        while True:
            batch = self.client.zrangebylex(
                self.urls, b"[" + low, b"[" + high, start=offset, num=BATCH
            )
            if not batch:
                return
            yield batch
            if paged:
                offset += len(batch)

    def _purge(self, keys: list[str], soft: bool) -> int:
        """Purge (or mark stale) ``keys`` in pipelined batches; the count of
        responses affected."""
        count = 0
        for start in range(0, len(keys), BATCH):
            pipeline = self.client.pipeline(transaction=False)
            for key in keys[start : start + BATCH]:
                if soft:
                    pipeline.execute_command(
                        "EVAL",
                        scripts.SOFTEN,
                        1,
                        key,
                        self.channel,
                        repr(time.time()),
                        self.settings.keep,
                        self.settings.grace,
                    )
                else:
                    pipeline.execute_command("EVAL", scripts.PURGE, 1, key, self.channel)
            count += sum(int(reply) for reply in pipeline.execute())
        return count

    def _forget(self, members: list[bytes]) -> None:
        """Drop purged entries' members from the URL index."""
        for start in range(0, len(members), BATCH):
            batch = members[start : start + BATCH]
            pipeline = self.client.pipeline(transaction=False)
            pipeline.zrem(self.urls, *batch)
            pipeline.zrem(self.expiry, *batch)
            pipeline.execute()


def _keys(members: Iterable[bytes]) -> list[str]:
    """The primary keys URL index members name."""
    return [member.rsplit(b"\n", 1)[-1].decode() for member in members]
