"""Flask: the cache as an extension, configured in ``app.config``.

.. code-block:: python

    from flask import Flask
    from redis_wsgi_cache.integrations.flask import RedisWSGICache

    app = Flask(__name__)
    app.config["REDIS_WSGI_CACHE_REDIS_URL"] = "redis://localhost:6379/0"
    app.config["REDIS_WSGI_CACHE_DEFAULT_TTL"] = 60
    cache = RedisWSGICache(app)

    # or, with an application factory:
    cache = RedisWSGICache()

    def create_app():
        app = Flask(__name__)
        app.config.from_object("settings")
        cache.init_app(app)
        return app

Every setting is read from ``app.config["REDIS_WSGI_CACHE_<NAME>"]``
(``REDIS_WSGI_CACHE_PREFIX``, ``REDIS_WSGI_CACHE_STALE_WHILE_REVALIDATE``…),
with the value in its text form or as a Python value (``60``, ``True``,
``[200, 404]``). Keyword arguments to ``RedisWSGICache()`` and ``init_app()``
win over ``app.config``, which wins over the environment and ``setup.cfg``.
An ``app.config`` key ``REDIS_WSGI_CACHE_*`` that names no setting, or a value
a setting does not allow, is an error in ``init_app``, naming the key.
"""

from __future__ import annotations

import os
import typing as t

from flask import current_app, has_app_context

from ..middleware import CacheMiddleware
from ..settings import ENV_PREFIX
from . import settings_from

if t.TYPE_CHECKING:
    from flask import Flask

# The key of the middleware in app.extensions.
EXTENSION = "redis_wsgi_cache"


def config_settings(app: Flask) -> dict[str, t.Any]:
    """The settings in ``app.config``: its ``REDIS_WSGI_CACHE_<NAME>`` keys, by
    setting name, each checked."""
    keys = {
        key.removeprefix(ENV_PREFIX).lower(): key
        for key in app.config
        if key.startswith(ENV_PREFIX)
    }
    return settings_from(
        {name: app.config[key] for name, key in keys.items()},
        lambda name: f"app.config[{keys[name]!r}]",
    )


class RedisWSGICache:
    """Puts a :class:`~redis_wsgi_cache.CacheMiddleware` around
    ``app.wsgi_app`` and keeps it in ``app.extensions["redis_wsgi_cache"]``.

    The purge verbs (``purge``, ``purge_tag``, ``purge_prefix``, ``purge_all``,
    each with ``soft=``) act on the cache of the current app in an app context
    (a view, a CLI command), else on the one app this extension was set up
    for; they raise ``redis.RedisError`` when Redis fails.

    :param app: the Flask app; or call :meth:`init_app` later.
    :param client: a ``redis.Redis`` or ``RedisCluster`` client, instead of one
        made from ``redis_url``.
    :param registry: a Prometheus registry to count in, as for ``CacheMiddleware``.
    :param config_file: as for ``CacheMiddleware``.
    :param settings: any setting by name; these win over ``app.config``.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        client: t.Any = None,
        registry: t.Any = None,
        config_file: str | os.PathLike[str] | None = None,
        **settings: t.Any,
    ) -> None:
        self.client = client
        self.registry = registry
        self.config_file = config_file
        self.settings = settings
        self.middlewares: list[CacheMiddleware] = []
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, **settings: t.Any) -> CacheMiddleware:
        """Wrap ``app.wsgi_app`` with the cache, configured by ``app.config``,
        then the constructor's keyword settings, then ``settings``."""
        if EXTENSION in app.extensions:
            raise RuntimeError(f"the cache is already set up for the app {app.name!r}")
        middleware = CacheMiddleware(
            app.wsgi_app,
            client=self.client,
            registry=self.registry,
            config_file=self.config_file,
            **{**config_settings(app), **self.settings, **settings},
        )
        app.wsgi_app = middleware  # type: ignore[method-assign]
        app.extensions[EXTENSION] = middleware
        self.middlewares.append(middleware)
        return middleware

    @property
    def middleware(self) -> CacheMiddleware:
        """The cache of the current app, or of the only app set up."""
        if has_app_context() and EXTENSION in current_app.extensions:
            return t.cast(CacheMiddleware, current_app.extensions[EXTENSION])
        if len(self.middlewares) == 1:
            return self.middlewares[0]
        raise RuntimeError(
            "no app context, and the cache is set up for "
            f"{len(self.middlewares)} apps: use it inside app.app_context()"
        )

    def purge(self, url: str, *, soft: bool = False) -> int:
        """Purge every stored response for ``url`` (all its variants)."""
        return self.middleware.purge(url, soft=soft)

    def purge_tag(self, tag: str, *, soft: bool = False) -> int:
        """Purge every stored response tagged ``tag``."""
        return self.middleware.purge_tag(tag, soft=soft)

    def purge_prefix(self, url_prefix: str, *, soft: bool = False) -> int:
        """Purge every stored response whose URL starts with ``url_prefix``."""
        return self.middleware.purge_prefix(url_prefix, soft=soft)

    def purge_all(self, *, soft: bool = False) -> int:
        """Purge every stored response of this cache (its prefix only)."""
        return self.middleware.purge_all(soft=soft)

    def close(self) -> None:
        """Close the cache of every app this extension set up: add the last
        counts to Redis, finish background refreshes, stop its threads."""
        for middleware in self.middlewares:
            middleware.close()
