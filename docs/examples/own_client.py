from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from redis_wsgi_cache import CacheMiddleware


def cached(app, host: str = "redis-1", port: int = 6379) -> CacheMiddleware:
    """``app`` behind the cache, on a Redis Cluster client of your own, with
    the bounds the cache gives the clients it makes."""
    client = RedisCluster(
        host=host,
        port=port,
        socket_timeout=0.25,
        socket_connect_timeout=0.25,
        retry=Retry(NoBackoff(), 0),
    )
    return CacheMiddleware(app, client=client)
