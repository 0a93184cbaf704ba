"""A shared HTTP response cache for any WSGI application, stored in Redis."""

from .entry import CachedResponse
from .middleware import CacheMiddleware
from .settings import Settings, SettingsError, load_settings

__all__ = ["CacheMiddleware", "CachedResponse", "Settings", "SettingsError", "load_settings"]
__version__ = "0.1.0"
