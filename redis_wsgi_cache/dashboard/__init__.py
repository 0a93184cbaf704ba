"""``redis-wsgi-cache dashboard``: a web page that shows what every process of
the cache shares in Redis (hit ratio and outcomes over time, Redis memory and
eviction, breakers and near caches, the URLs missed most, the largest tags,
recent purges), looks URLs up and purges, served by waitress
(``pip install 'redis-wsgi-cache[dashboard]'``). It is an app of its own: the
cached app needs no change, and the page needs no internet."""

from __future__ import annotations

import sys
import typing as t

from ..cache import Cache
from ..clients import make_client
from .app import Dashboard, is_loopback
from .report import redis_location

if t.TYPE_CHECKING:
    from ..settings import Settings

__all__ = ["Dashboard", "PublicWithoutToken", "check_address", "serve"]


class PublicWithoutToken(ValueError):
    """The dashboard was asked to listen beyond the loopback with no
    ``purge_token``: anyone who reaches it could purge."""


def check_address(host: str, settings: Settings) -> None:
    """:class:`PublicWithoutToken` for an address beyond the loopback when
    ``purge_token`` is not set."""
    if not settings.purge_token and not is_loopback(host):
        raise PublicWithoutToken(
            f"--host {host}: the dashboard listens beyond the loopback only with a"
            " purge_token (REDIS_WSGI_CACHE_PURGE_TOKEN or --set purge_token=…), which"
            " every purge must then carry"
        )


def serve(settings: Settings, host: str, port: int, threads: int = 4) -> int:
    """Serve the dashboard of the cache ``settings`` describe on ``host``:``port``
    until interrupted; the exit status. Prints a line with its address once it
    listens."""
    try:
        import waitress
    except ImportError:
        print(
            "redis-wsgi-cache dashboard: pip install 'redis-wsgi-cache[dashboard]'",
            file=sys.stderr,
        )
        return 2
    check_address(host, settings)
    client = make_client(settings)
    app = Dashboard(Cache._of(settings, client))
    server = waitress.create_server(
        app, host=host, port=port, threads=threads, ident="redis-wsgi-cache dashboard"
    )
    address = getattr(server, "effective_host", host), getattr(server, "effective_port", port)
    shown = f"[{address[0]}]" if ":" in str(address[0]) else address[0]
    print(
        f"dashboard of {settings.prefix}: on http://{shown}:{address[1]}/ (Redis"
        f" {redis_location(settings.redis_url)}); purges"
        f" {'need the purge_token' if settings.purge_token else 'from this machine only'}",
        flush=True,
    )
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        client.close()
    return 0
