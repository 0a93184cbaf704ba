"""A shared HTTP response cache for any WSGI application, stored in Redis."""

from .cache import Cache
from .entry import CachedResponse
from .middleware import CacheMiddleware
from .settings import Settings, SettingsError, load_settings
from .tags import add_tags

__all__ = [
    "Cache",
    "CacheMiddleware",
    "CachedResponse",
    "Settings",
    "SettingsError",
    "add_tags",
    "load_settings",
]
__version__ = "0.3.0"
