"""``python -m example_app``: serve the cached users service on localhost:5000.

With ``REDIS_URL`` unset and nothing listening on localhost:6379, a private
redis-server is started on a free port for the life of the process."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys

from werkzeug.serving import run_simple

from redis_wsgi_cache.server import RedisServer, RedisServerError, is_listening

from .app import create_app, wrap

logger = logging.getLogger("example_app")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m example_app", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    with contextlib.ExitStack() as stack:
        redis_url = os.environ.get("REDIS_URL")
        if not redis_url:
            if is_listening("127.0.0.1", 6379):
                redis_url = "redis://127.0.0.1:6379/0"
                logger.info("using the Redis listening on %s", redis_url)
            else:
                try:
                    server = stack.enter_context(RedisServer())
                except RedisServerError as error:
                    print(f"example_app: {error}", file=sys.stderr)
                    return 1
                redis_url = server.url
                logger.info(
                    "no REDIS_URL and nothing on localhost:6379: started a private"
                    " redis-server (%s) at %s; it stops when this process exits",
                    server.binary,
                    redis_url,
                )
        app = wrap(create_app(), redis_url=redis_url)
        run_simple(args.host, args.port, app, threaded=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
