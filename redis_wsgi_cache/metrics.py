"""Prometheus metrics of the cache (``pip install redis-wsgi-cache[prometheus]``):
requests by outcome and reason, the time the cache adds to them, stores,
refreshes, purges, Redis errors and whether Redis is usable. In a registry of
the application's own, exposed on ``metrics_path``, or served by
prometheus_client's own HTTP server on ``metrics_port`` (127.0.0.1 unless
``metrics_address`` says otherwise); under gunicorn and other pre-forking
servers, prometheus_client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``)
adds up the workers."""

from __future__ import annotations

import logging
import os
import threading
import typing as t
import weakref

try:
    import prometheus_client
    from prometheus_client import multiprocess
except ImportError:  # the [prometheus] extra is not installed
    prometheus_client = None  # type: ignore[assignment]

logger = logging.getLogger("redis_wsgi_cache")

NAMESPACE = "redis_wsgi_cache"
# Seconds the cache adds to a request: from a tenth of a millisecond (a near
# cache hit) to a second (a Redis timeout).
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
MISSING = (
    "metrics need prometheus_client: pip install 'redis-wsgi-cache[prometheus]'"
    " (or leave metrics_path and metrics_port unset and pass no registry)"
)

_SHARED: weakref.WeakKeyDictionary[t.Any, _Collectors] = weakref.WeakKeyDictionary()
_GUARD = threading.Lock()


class _Collectors:
    """The metric families, registered once per registry; each cache's series
    carry its prefix as the ``cache`` label."""

    def __init__(self, registry: t.Any) -> None:
        labels = ["cache"]
        common = {"namespace": NAMESPACE, "registry": registry}
        self.requests = prometheus_client.Counter(
            "requests",
            "Requests by what the cache did (X-Cache) and why (Cache-Status detail)",
            [*labels, "outcome", "reason"],
            **common,
        )
        self.added = prometheus_client.Histogram(
            "added_seconds",
            "Time the cache added to a request (the app's own time left out)",
            [*labels, "outcome"],
            buckets=BUCKETS,
            **common,
        )
        self.events = prometheus_client.Counter(
            "events",
            "Stores, background refreshes, invalidations and purged responses",
            [*labels, "event"],
            **common,
        )
        self.redis_errors = prometheus_client.Counter(
            "redis_errors",
            "Redis calls that failed (timeouts, refused connections, error replies)",
            [*labels, "error"],
            **common,
        )
        self.redis_usable = prometheus_client.Gauge(
            "redis_usable",
            "1 while Redis is used, 0 while the circuit breaker leaves it alone",
            labels,
            **common,
            multiprocess_mode="livemin",
        )


class Metrics:
    """The metrics of one cache, in ``registry`` (a private one if None);
    with ``port``, served by prometheus_client's HTTP server on ``address``,
    started in each process on its first request (the first process of a
    pre-forking server to start it serves every worker's figures, in
    multiprocess mode)."""

    def __init__(
        self, cache: str, registry: t.Any = None, port: int = 0, address: str = "127.0.0.1"
    ) -> None:
        if prometheus_client is None:
            raise RuntimeError(MISSING)
        self.registry = registry if registry is not None else prometheus_client.CollectorRegistry()
        with _GUARD:
            collectors = _SHARED.get(self.registry)
            if collectors is None:
                collectors = _SHARED[self.registry] = _Collectors(self.registry)
        self._requests = collectors.requests
        self._added = collectors.added
        self._events = collectors.events
        self._redis_errors = collectors.redis_errors
        self._usable = collectors.redis_usable.labels(cache)
        self._usable.set(1)
        self.cache = cache
        self.port = port
        self.address = address
        self._serving = 0  # the process whose server started (or was tried)

    def request(self, outcome: str, reason: str | None, added: float) -> None:
        if self.port and self._serving != os.getpid():
            self._serve()
        self._requests.labels(self.cache, outcome.lower(), reason or "").inc()
        self._added.labels(self.cache, outcome.lower()).observe(max(added, 0.0))

    def event(self, name: str, amount: int = 1) -> None:
        self._events.labels(self.cache, name).inc(amount)

    def redis_failed(self, error: BaseException) -> None:
        self._redis_errors.labels(self.cache, type(error).__name__).inc()
        self._usable.set(0)

    def redis_usable(self) -> None:
        self._usable.set(1)

    def exposition(self) -> tuple[str, bytes]:
        """The content type and body of a scrape: this registry, or in
        multiprocess mode every process's figures."""
        return prometheus_client.CONTENT_TYPE_LATEST, prometheus_client.generate_latest(
            self._scraped()
        )

    def _scraped(self) -> t.Any:
        """The registry a scrape reads: this one, or in multiprocess mode one
        that adds up every process's figures."""
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            return self.registry
        registry = prometheus_client.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry

    def _serve(self) -> None:
        """Start prometheus_client's HTTP server in this process, once. A port
        taken (by another worker of the same server, which then serves it) is
        not an error."""
        with _GUARD:
            if self._serving == os.getpid():
                return
            self._serving = os.getpid()
        try:
            prometheus_client.start_http_server(
                self.port, addr=self.address, registry=self._scraped()
            )
        except OSError as error:
            logger.debug("metrics server on %s:%d not started: %s", self.address, self.port, error)
