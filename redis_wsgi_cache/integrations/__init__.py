"""Framework glue over :class:`~redis_wsgi_cache.CacheMiddleware`: settings read
where each framework keeps its configuration, and the middleware put in place.

- :mod:`~redis_wsgi_cache.integrations.flask`: the ``RedisWSGICache`` extension,
  configured by ``app.config["REDIS_WSGI_CACHE_<NAME>"]``.
- :mod:`~redis_wsgi_cache.integrations.django`: ``cache_application`` for
  ``wsgi.py``, configured by ``settings.REDIS_WSGI_CACHE``.
- :mod:`~redis_wsgi_cache.integrations.paste`: a Paste Deploy filter,
  ``use = egg:redis-wsgi-cache``, configured by its section of the ``.ini``.

Each takes every setting by its one name, and reads the environment and
``setup.cfg`` for the settings it is not given, as the middleware does.
"""

from __future__ import annotations

import typing as t
from collections.abc import Callable, Mapping

from ..settings import validate


def settings_from(values: Mapping[str, t.Any], source: Callable[[str], str]) -> dict[str, t.Any]:
    """``values`` (setting name to value) checked now, so that a bad value or an
    unknown name fails at start-up with an error naming where it was written:
    ``source(name)``, such as ``app.config['REDIS_WSGI_CACHE_DEFAULT_TTL']``."""
    for name, value in values.items():
        validate(name, value, source(name))
    return dict(values)
