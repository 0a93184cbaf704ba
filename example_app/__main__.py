"""``python -m example_app``: serve the cached users service on localhost:5000.

With ``REDIS_URL`` unset and nothing listening on localhost:6379, a private
redis-server is started on a free port for the life of the process."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys

from werkzeug.serving import run_simple

from redis_wsgi_cache.server import RedisServer, RedisServerError, is_listening

from .app import create_app, wrap

logger = logging.getLogger("example_app")


def configured_redis_url(environ: dict[str, str] | os._Environ[str]) -> str | None:
    """``REDIS_URL`` (or ``REDIS_WSGI_CACHE_REDIS_URL``) if set, else the Redis on
    localhost:6379 if one listens there, else None: start a private one."""
    url = environ.get("REDIS_URL") or environ.get("REDIS_WSGI_CACHE_REDIS_URL")
    if url:
        return url
    if is_listening("127.0.0.1", 6379):
        return "redis://127.0.0.1:6379/0"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m example_app", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument(
        "--private-redis",
        action="store_true",
        help="always start a private redis-server, even if REDIS_URL is set",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    # Stop cleanly on SIGTERM too, so the private redis-server goes with us.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))

    with contextlib.ExitStack() as stack:
        redis_url = None if args.private_redis else configured_redis_url(os.environ)
        if redis_url is None:
            try:
                server = stack.enter_context(RedisServer())
            except RedisServerError as error:
                print(f"example_app: {error}", file=sys.stderr)
                return 1
            redis_url = server.url
            logger.info(
                "started a private redis-server (%s) at %s; it stops when this process exits",
                server.binary,
                redis_url,
            )
        else:
            logger.info("using the Redis at %s", redis_url)
        app = wrap(create_app(), redis_url=redis_url)
        settings = app.wsgi_app.settings
        logger.info(
            "see what the cache does with: redis-wsgi-cache --redis-url %s --key-prefix %s stats",
            settings.redis_url,
            settings.prefix,
        )
        run_simple(args.host, args.port, app, threaded=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
