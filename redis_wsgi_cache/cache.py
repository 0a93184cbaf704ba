"""The cache without a WSGI app around it: invalidation from a script, a signal
handler or a task queue, with the same settings (and so the same keys) as the
middleware. ``CacheMiddleware`` has one too, as ``middleware.cache``."""

from __future__ import annotations

import os
import typing as t

from .clients import make_client
from .index import Index
from .keys import QueryNormalizer, canonical_url
from .settings import Settings, load_settings
from .store import REDIS_ERRORS


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
    not happen must not look done.

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

    def purge(self, url: str, *, soft: bool = False) -> int:
        """Purge every stored response for ``url`` (all its variants)."""
        return self.index.purge_url(self.canonical_url(url), soft=soft)

    def purge_tag(self, tag: str, *, soft: bool = False) -> int:
        """Purge every stored response tagged ``tag``."""
        return self.index.purge_tag(tag, soft=soft)

    def purge_prefix(self, url_prefix: str, *, soft: bool = False) -> int:
        """Purge every stored response whose URL starts with ``url_prefix``
        (``https://example.com/users/``)."""
        return self.index.purge_prefix(self.canonical_url(url_prefix), soft=soft)

    def purge_all(self, *, soft: bool = False) -> int:
        """Purge every stored response of this cache (this prefix only)."""
        return self.index.purge_all(soft=soft)

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
