"""The Redis clients the settings describe: blocking ones for the WSGI side
and for what runs off the request path, asyncio ones for the ASGI side. Every
call is bounded by ``socket_timeout`` and never retried, so a dead Redis costs
at most one timeout."""

from __future__ import annotations

import threading
import typing as t
from urllib.parse import unquote, urlsplit, urlunsplit

import redis
import redis.asyncio
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel

from .settings import SettingsError

if t.TYPE_CHECKING:
    from .settings import Settings

# What a blocking twin of an asyncio client takes from its connection settings.
_TWIN_OPTIONS = (
    "host",
    "port",
    "db",
    "path",
    "username",
    "password",
    "credential_provider",
    "client_name",
    "protocol",
    "socket_keepalive",
    "socket_keepalive_options",
    "ssl_keyfile",
    "ssl_certfile",
    "ssl_cert_reqs",
    "ssl_ca_certs",
    "ssl_ca_data",
    "ssl_check_hostname",
    "ssl_min_version",
    "ssl_ciphers",
)


class _Options(t.NamedTuple):
    urls: list[str]
    tls: bool
    database: int
    credentials: dict[str, t.Any]
    bounded: dict[str, t.Any]
    cluster: bool


def _options(settings: Settings) -> _Options:
    urls = settings.redis_url.split(",")
    first = urlsplit(urls[0])
    tls = first.scheme.startswith("rediss")
    bounded: dict[str, t.Any] = {
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.socket_timeout,
    }
    if tls:
        bounded.update(
            ssl_cert_reqs=settings.tls_verify,
            ssl_ca_certs=settings.tls_ca_file or None,
            ssl_certfile=settings.tls_cert_file or None,
            ssl_keyfile=settings.tls_key_file or None,
            ssl_check_hostname=settings.tls_verify == "required",
        )
    credentials = {
        "username": unquote(first.username) if first.username else None,
        "password": unquote(first.password) if first.password else None,
    }
    database = first.path.strip("/")
    cluster = settings.cluster or first.scheme.endswith("+cluster")
    return _Options(urls, tls, int(database) if database else 0, credentials, bounded, cluster)


def _sentinel_kwargs(settings: Settings) -> dict[str, t.Any]:
    return {
        "username": settings.sentinel_username or None,
        "password": settings.sentinel_password or None,
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.socket_timeout,
    }


def _node(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or 6379


class _Kind(t.NamedTuple):
    """The classes a kind of client (blocking or asyncio) is made of."""

    retry: t.Any
    sentinel: t.Any
    node: t.Any
    cluster: t.Any
    standalone: t.Any


_BLOCKING = _Kind(Retry, Sentinel, ClusterNode, None, redis.Redis)
_ASYNCIO = _Kind(
    AsyncRetry, AsyncSentinel, AsyncClusterNode, redis.asyncio.RedisCluster, redis.asyncio.Redis
)


def _make(settings: Settings, kind: _Kind) -> t.Any:
    options = _options(settings)
    bounded = {**options.bounded, "retry": kind.retry(NoBackoff(), 0)}
    if settings.sentinels:
        sentinel = kind.sentinel(
            list(settings.sentinels), sentinel_kwargs=_sentinel_kwargs(settings)
        )
        return sentinel.master_for(
            settings.sentinel_service,
            db=options.database,
            ssl=options.tls,
            **options.credentials,
            **bounded,
        )
    if options.cluster:
        nodes = [kind.node(*_node(url)) for url in options.urls]
        cluster = kind.cluster or LazyCluster
        return cluster(startup_nodes=nodes, ssl=options.tls, **options.credentials, **bounded)
    return kind.standalone.from_url(options.urls[0], **bounded)


def make_client(settings: Settings) -> redis.Redis | LazyCluster:
    """The blocking client the settings describe: a standalone Redis
    (``redis_url``), a Redis Cluster (``cluster``, or a ``redis+cluster://``
    URL, with seeds separated by commas) or the master a set of ``sentinels``
    knows as ``sentinel_service``; TLS for ``rediss://`` (``tls_*``)."""
    client: redis.Redis | LazyCluster = _make(settings, _BLOCKING)
    return client


def make_async_client(settings: Settings) -> redis.asyncio.Redis | redis.asyncio.RedisCluster:
    """:func:`make_client`'s asyncio counterpart (which connects on first use)."""
    client: redis.asyncio.Redis | redis.asyncio.RedisCluster = _make(settings, _ASYNCIO)
    return client


def blocking_twin(client: t.Any, settings: Settings) -> redis.Redis | LazyCluster:
    """A blocking client to the Redis an asyncio ``client`` talks to (for what
    runs off the request path), made from its connection settings."""
    if isinstance(client, redis.asyncio.RedisCluster):
        kwargs = client.get_connection_kwargs()
        nodes = [ClusterNode(node.host, node.port) for node in client.startup_nodes]
        return LazyCluster(startup_nodes=nodes, **_twin_kwargs(kwargs, settings))
    if not isinstance(client, redis.asyncio.Redis):
        raise SettingsError(
            f"client: a redis.asyncio client (redis.asyncio.Redis or RedisCluster),"
            f" not {type(client).__module__}.{type(client).__qualname__}"
        )
    pool = client.connection_pool
    if isinstance(pool, redis.asyncio.sentinel.SentinelConnectionPool):
        raise SettingsError(
            "client: a Sentinel-managed client is not supported; give the sentinels"
            " in the settings (sentinels=, sentinel_service=) instead"
        )
    kwargs = _twin_kwargs(pool.connection_kwargs, settings)
    name = pool.connection_class.__name__
    if name == "UnixDomainSocketConnection":
        return redis.Redis(unix_socket_path=kwargs.pop("path"), **kwargs)
    return redis.Redis(ssl=name == "SSLConnection", **kwargs)


def _twin_kwargs(kwargs: dict[str, t.Any], settings: Settings) -> dict[str, t.Any]:
    twin = {name: kwargs[name] for name in _TWIN_OPTIONS if name in kwargs}
    twin.update(
        socket_timeout=settings.socket_timeout,
        socket_connect_timeout=settings.socket_timeout,
        retry=Retry(NoBackoff(), 0),
    )
    return twin


class LazyCluster:
    """A ``RedisCluster`` made on first use: making one connects to the cluster,
    and a cluster that is down when the app starts must cost the app nothing
    but misses (a failure to connect is a Redis failure like any other)."""

    def __init__(self, **kwargs: t.Any) -> None:
        self._kwargs = kwargs
        self._client: RedisCluster | None = None
        self._guard = threading.Lock()

    def _cluster(self) -> RedisCluster:
        with self._guard:
            if self._client is None:
                self._client = RedisCluster(**self._kwargs)
            return self._client

    def get_connection_kwargs(self) -> dict[str, t.Any]:
        return dict(self._kwargs)

    def register_script(self, script: bytes) -> t.Any:
        # The script is registered without connecting: Script only keeps its
        # client, to run it later (by then, the cluster's).
        return redis.commands.core.Script(t.cast(RedisCluster, self), script)

    def __getattr__(self, name: str) -> t.Any:
        return getattr(self._cluster(), name)


def refuse_decoding(client: t.Any) -> None:
    """A client that decodes responses cannot hold response bodies."""
    # get_connection_kwargs() covers RedisCluster, which has no connection_pool.
    kwargs = getattr(client, "get_connection_kwargs", dict)() or getattr(
        getattr(client, "connection_pool", None), "connection_kwargs", {}
    )
    if kwargs.get("decode_responses"):
        raise ValueError(
            "client: a redis client with decode_responses=True cannot hold"
            " response bodies; pass one created with decode_responses=False"
        )


def without_password(url: str) -> str:
    """A Redis URL as it may be shown: its password, if any, as ``***``."""
    parts = urlsplit(url.strip())
    if parts.password is None:
        return url.strip()
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
