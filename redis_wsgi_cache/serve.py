"""``redis-wsgi-cache serve MODULE:APP``: any WSGI application behind the cache,
served by waitress (``pip install 'redis-wsgi-cache[serve]'``), for trying the
cache on an app, or running a small one."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import sys
import typing as t

from .middleware import CacheMiddleware
from .server import RedisServer

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

    from .settings import Settings


class AppNotFound(ValueError):
    """MODULE:APP names no WSGI application."""


def load_app(spec: str) -> WSGIApplication:
    """The WSGI application ``spec`` names: ``module:name``, or
    ``module:factory()`` for one a factory makes (Flask's ``create_app()``)."""
    module_name, colon, name = spec.partition(":")
    if not colon or not module_name or not name:
        raise AppNotFound(f"{spec!r}: expected MODULE:APP, e.g. myapp:application")
    call = name.endswith("()")
    name = name.removesuffix("()")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise AppNotFound(f"{spec!r}: cannot import {module_name}: {error}") from None
    app = getattr(module, name, None)
    if app is None:
        raise AppNotFound(f"{spec!r}: {module_name} has no {name}")
    if call:
        app = app()
    if not callable(app):
        raise AppNotFound(f"{spec!r}: {name} is not a WSGI application")
    return t.cast("WSGIApplication", app)


def serve(
    spec: str,
    settings: Settings,
    host: str,
    port: int,
    threads: int,
    private_redis: bool = False,
) -> int:
    """Serve ``spec`` behind the cache until interrupted; the exit status."""
    try:
        import waitress
    except ImportError:
        print("redis-wsgi-cache serve: pip install 'redis-wsgi-cache[serve]'", file=sys.stderr)
        return 2
    try:
        app = load_app(spec)
    except AppNotFound as error:
        print(f"redis-wsgi-cache serve: {error}", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        if private_redis:
            settings = dataclasses.replace(
                settings, redis_url=stack.enter_context(RedisServer()).url
            )
        overrides = {
            field.name: getattr(settings, field.name) for field in dataclasses.fields(settings)
        }
        middleware = CacheMiddleware(app, **overrides)
        stack.callback(middleware.close)
        print(
            f"serving {spec} on http://{host}:{port} with waitress ({threads} threads),"
            f" cached in {settings.redis_url} under {settings.prefix}:",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            waitress.serve(
                middleware, host=host, port=port, threads=threads, ident="redis-wsgi-cache"
            )
    return 0
