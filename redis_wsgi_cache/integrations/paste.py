"""Paste Deploy: the cache as a filter in an ``.ini`` pipeline, for servers that
load one (``pserve``, ``gunicorn --paste``, ``uwsgi --paste``).

.. code-block:: ini

    [pipeline:main]
    pipeline = cache myapp

    [filter:cache]
    use = egg:redis-wsgi-cache
    redis_url = redis://localhost:6379/0
    default_ttl = 60
    cacheable_statuses = 200, 404

    [app:myapp]
    use = egg:myapp

The keys of the filter's section are setting names with their values in text
form, as in ``setup.cfg``; they win over the environment and ``setup.cfg``.
A key that is no setting, or a value a setting does not allow, is an error
when the ``.ini`` is loaded, naming the key and the file.
"""

from __future__ import annotations

import typing as t
from collections.abc import Callable, Mapping

from ..middleware import CacheMiddleware
from . import settings_from

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication


def filter_factory(
    global_conf: Mapping[str, str], **local_conf: str
) -> Callable[[WSGIApplication], CacheMiddleware]:
    """The ``paste.filter_factory`` entry point: the filter section's keys
    (``local_conf``) are the settings; ``global_conf`` only names the file."""
    where = global_conf.get("__file__", "the .ini file")
    settings = settings_from(local_conf, lambda name: f"{name} in the cache filter of {where}")

    def cache_filter(app: WSGIApplication) -> CacheMiddleware:
        return CacheMiddleware(app, **settings)

    return cache_filter
