"""The example "users" service: a Flask app whose handlers know nothing of
caching, wrapped by :class:`~redis_wsgi_cache.CacheMiddleware` from outside."""

from .app import create_app, wrap

__all__ = ["create_app", "wrap"]
