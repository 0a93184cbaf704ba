"""The cache without a WSGI app around it: invalidation from a script, a signal
handler or a task queue, with the same settings (and so the same keys) as the
middleware. ``CacheMiddleware`` has one too, as ``middleware.cache``."""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import time
import typing as t

from .clients import make_client
from .index import Index
from .keys import QueryNormalizer, canonical_url
from .settings import Settings, load_settings
from .stats import purges_key
from .store import REDIS_ERRORS, RedisStore

logger = logging.getLogger("redis_wsgi_cache")

# The most purges the log of recent purges keeps.
PURGE_LOG_SIZE = 100


class Cache:
    """Purge what the cache stored, by URL, tag, URL prefix or all at once.

    Each verb returns how many stored responses it affected (each ``Vary``
    variant counts), and reaches every process's near cache. With ``soft=True``
    the responses are marked stale instead of deleted (Varnish's soft purge):
    the next request revalidates them, and stale-while-revalidate and
    stale-if-error may still use them meanwhile. URLs are canonicalised as the
    keys are (scheme and host case, default port, percent-encoding, ignored
    and reordered query parameters), so any spelling that reaches an entry
    purges it. A Redis error is raised (``redis.RedisError``): a purge that did
    not happen must not look done. Each purge is added to the log of recent
    purges the dashboard shows, with ``origin`` (where it came from; by
    default this host and process).

    :param client: a ``redis.Redis`` or ``RedisCluster`` client, instead of one
        made from ``redis_url``.
    :param config_file: as for ``CacheMiddleware``.
    :param settings: any setting by name, as for ``CacheMiddleware``.

    .. code-block:: python

        from redis_wsgi_cache import Cache
        cache = Cache()  # the settings the app's middleware reads
        cache.purge("https://example.com/users/7")
        cache.purge_tag("user-7", soft=True)
    """

    def __init__(
        self,
        *,
        client: t.Any = None,
        config_file: str | os.PathLike[str] | None = None,
        **settings: t.Any,
    ) -> None:
        loaded = load_settings(settings, config_file=config_file)
        self._attach(loaded, client if client is not None else make_client(loaded))

    @classmethod
    def _of(cls, settings: Settings, client: t.Any) -> Cache:
        """The Cache of a middleware: its settings and client."""
        cache = cls.__new__(cls)
        cache._attach(settings, client)
        return cache

    def _attach(self, settings: Settings, client: t.Any) -> None:
        self.settings = settings
        self.client = client
        self.normalize = QueryNormalizer(settings.ignored_query_params, settings.sort_query)
        self.index = Index(client, settings)

    def canonical_url(self, url: str) -> str:
        """``url`` as the cache keys it; :class:`ValueError` if it is not an
        absolute http(s) URL."""
        return canonical_url(url, self.normalize)

    def purge(self, url: str, *, soft: bool = False, origin: str | None = None) -> int:
        """Purge every stored response for ``url`` (all its variants)."""
        count = self.index.purge_url(self.canonical_url(url), soft=soft)
        return self._logged("url", url, soft, count, origin)

    def purge_tag(self, tag: str, *, soft: bool = False, origin: str | None = None) -> int:
        """Purge every stored response tagged ``tag``."""
        count = self.index.purge_tag(tag, soft=soft)
        return self._logged("tag", tag, soft, count, origin)

    def purge_prefix(
        self, url_prefix: str, *, soft: bool = False, origin: str | None = None
    ) -> int:
        """Purge every stored response whose URL starts with ``url_prefix``
        (``https://example.com/users/``)."""
        count = self.index.purge_prefix(self.canonical_url(url_prefix), soft=soft)
        return self._logged("prefix", url_prefix, soft, count, origin)

    def purge_all(self, *, soft: bool = False, origin: str | None = None) -> int:
        """Purge every stored response of this cache (this prefix only)."""
        count = self.index.purge_all(soft=soft)
        return self._logged("all", "", soft, count, origin)

    @functools.cached_property
    def _store(self) -> RedisStore:
        """The store :meth:`inspect` reads entries with, made once."""
        return RedisStore(self.client, self.settings)

    def inspect(self, url: str) -> list[dict[str, t.Any]]:
        """Every response stored for ``url`` (each variant), as
        ``redis-wsgi-cache inspect`` prints it: its key, URL, status, age and
        ttl (seconds), how long Redis keeps it, Vary names, tags, validators,
        body size and headers; ``readable: False`` for what this version
        cannot read. :class:`ValueError` for a URL that is not absolute; raises
        the Redis error, if any."""
        store = self._store
        now = time.time()
        found: list[dict[str, t.Any]] = []
        for primary in self.index.keys_of(self.canonical_url(url)):
            for key, entry, redis_ttl in store.entries_of(primary):
                if entry is None:
                    found.append({"key": key, "readable": False})
                    continue
                found.append(
                    {
                        "key": key,
                        "url": entry.url,
                        "status": entry.status,
                        "age": round(entry.current_age(now), 3),
                        "ttl": round(entry.ttl(now), 3),
                        "redis_ttl": redis_ttl,
                        "vary": list(entry.vary),
                        "tags": list(entry.tags),
                        "etag": entry.etag,
                        "last_modified": entry.last_modified,
                        "body_bytes": entry.body_length,
                        "headers": entry.headers,
                    }
                )
        return found

    def recent_purges(self, limit: int = PURGE_LOG_SIZE) -> list[dict[str, t.Any]]:
        """The last purges, newest first: ``what`` (``url``, ``tag``,
        ``prefix``, ``all``), ``target``, ``soft``, ``count``, ``at`` (seconds
        since the epoch) and ``origin``. Raises the Redis error, if any."""
        found = []
        for line in self.client.lrange(purges_key(self.settings.prefix), 0, limit - 1):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                found.append(record)
        return found

    def _logged(self, what: str, target: str, soft: bool, count: int, origin: str | None) -> int:
        """Add a purge done to the log of recent purges (a capped list); a
        failure to is logged, not raised: the purge itself is done."""
        record = {
            "what": what,
            "target": target,
            "soft": soft,
            "count": count,
            "at": round(time.time(), 3),
            "origin": origin or f"{socket.gethostname()} (pid {os.getpid()})",
        }
        key = purges_key(self.settings.prefix)
        try:
            pipeline = self.client.pipeline(transaction=False)
            pipeline.lpush(key, json.dumps(record))
            pipeline.ltrim(key, 0, PURGE_LOG_SIZE - 1)
            pipeline.expire(key, self.settings.stats_history or 86400)
            pipeline.execute()
        except REDIS_ERRORS as error:
            logger.warning("could not add a purge to the log of recent purges: %s", error)
        return count

    def health(self, breaker_open: bool = False) -> dict[str, t.Any]:
        """Whether the cache can work, for a health endpoint: ``ok``, whether
        Redis answers (``redis``, and ``latency_ms`` of a PING), the circuit
        breaker (``breaker``: ``open`` while a process leaves Redis alone),
        ``entries`` (URLs stored) and ``memory_bytes`` (what Redis uses).
        Never raises: a failing Redis is ``ok: False`` with the error."""
        try:
            latency, entries, memory = self.index.usage()
        except REDIS_ERRORS as error:
            return {
                "ok": False,
                "redis": f"unreachable ({type(error).__name__}: {error})",
                "breaker": "open" if breaker_open else "closed",
            }
        return {
            "ok": not breaker_open,
            "redis": "reachable",
            "latency_ms": round(latency * 1000, 3),
            "breaker": "open" if breaker_open else "closed",
            "entries": entries,
            "memory_bytes": memory,
        }
