"""Django: the cache in front of a whole project, configured in ``settings.py``.

.. code-block:: python

    # settings.py
    REDIS_WSGI_CACHE = {
        "redis_url": "redis://localhost:6379/0",
        "default_ttl": 60,
    }

    # wsgi.py
    from django.core.wsgi import get_wsgi_application
    from redis_wsgi_cache.integrations.django import cache_application

    application = cache_application(get_wsgi_application())

``settings.REDIS_WSGI_CACHE`` maps setting names to values, in their text form
or as Python values (``60``, ``True``, ``[200, 404]``). Keyword arguments to
:func:`cache_application` win over it, and it wins over the environment and
``setup.cfg``. A name that is no setting, or a value a setting does not allow,
is an error when ``wsgi.py`` is imported, naming the key.

Requests with cookies go to the app uncached (``cookie_requests = pass``), so
the pages of a visitor with a ``sessionid`` or a ``csrftoken`` stay their own,
and responses that set a cookie are never stored: what is cached is what
visitors without cookies get. Tag a response from a view with
``add_tags(request.META, "user-7")``, and purge from anywhere (a signal
handler, a management command) with the same settings through
:func:`get_cache`:

.. code-block:: python

    from redis_wsgi_cache.integrations.django import get_cache

    get_cache().purge_tag(f"user-{user.pk}")
"""

from __future__ import annotations

import functools
import typing as t
from collections.abc import Mapping

from django.conf import settings
from django.core.signals import setting_changed

from ..cache import Cache
from ..middleware import CacheMiddleware
from ..settings import SettingsError
from . import settings_from

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

# The name of the Django setting holding the cache's settings.
SETTING = "REDIS_WSGI_CACHE"


def django_settings() -> dict[str, t.Any]:
    """The cache's settings in ``settings.REDIS_WSGI_CACHE`` (none if it is
    not set), each checked."""
    values = getattr(settings, SETTING, {})
    if not isinstance(values, Mapping):
        raise SettingsError(f"settings.{SETTING}={values!r}: expected a dict of settings by name")
    return settings_from(values, lambda name: f"settings.{SETTING}[{name!r}]")


def cache_application(application: WSGIApplication, **overrides: t.Any) -> CacheMiddleware:
    """``application`` (a Django project's WSGI application) behind the cache,
    configured by ``settings.REDIS_WSGI_CACHE``, then ``overrides``."""
    return CacheMiddleware(application, **{**django_settings(), **overrides})


@functools.cache
def get_cache() -> Cache:
    """The purge verbs of the cache ``settings.REDIS_WSGI_CACHE`` configures:
    a :class:`~redis_wsgi_cache.Cache` made once, and again after the setting
    changes (``override_settings`` in tests)."""
    return Cache(**django_settings())


def _setting_changed(*, setting: str, **kwargs: t.Any) -> None:
    if setting == SETTING:
        get_cache.cache_clear()


setting_changed.connect(_setting_changed)
