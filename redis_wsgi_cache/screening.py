"""Request screening: what in a GET or HEAD request could change the page
although the key does not hold it. Each such input either becomes part of the
key or makes the request bypass the cache. Pure functions of the WSGI environ.

- A request body (a "fat GET": ``Content-Length`` or ``Transfer-Encoding``)
  bypasses: the key holds no body.
- A header in ``bypass_headers`` bypasses; a method override
  (``X-HTTP-Method-Override: DELETE``…) that names an unsafe method makes the
  request unsafe, so that its success invalidates the URL.
- Headers in ``key_headers`` (what proxy fixers and URL rewriters turn into
  another scheme, host, port, path or URL) are added to the key, value and all:
  a reverse proxy sends the same values every time, an attacker gets a key of
  their own.
- Cookies: those matching ``ignored_cookies`` are removed before the app sees
  them (so it cannot reflect them into a shared page); any other makes the
  request bypass, unless ``cookie_requests = cache``.
- The raw request target some servers pass on (``RAW_URI``, ``REQUEST_URI``), which
  an app may read instead of ``PATH_INFO`` and ``QUERY_STRING``: when it is another
  spelling than theirs (an absolute-form target, ``%2F``, percent-encoding of
  what needs none), the request bypasses, since the key holds theirs.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import typing as t
from urllib.parse import quote

from .keys import PATH_SAFE, PLAIN_PATH

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from .settings import Settings

# Where the values the screening changed in environ are kept.
ENVIRON_ORIGINAL = "redis_wsgi_cache.orig"
# Headers whose value is the method the app will act on.
METHOD_OVERRIDES = frozenset({"x-http-method", "x-http-method-override", "x-method-override"})
# RFC 9110 §9.2.1.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


@dataclasses.dataclass(frozen=True, slots=True)
class Screening:
    """What screening found: a reason to bypass (``None`` to go on), whether the
    request is in fact unsafe (a method override), and the key material."""

    bypass: str | None = None
    unsafe: bool = False
    key_extra: str = ""


PASS = Screening()
RAW_URI = Screening("raw-uri")


# Where servers pass on the request target as it came (gunicorn, uWSGI, mod_wsgi).
RAW_TARGETS = ("RAW_URI", "REQUEST_URI")


def raw_target_differs(environ: WSGIEnvironment) -> bool:
    """Whether the raw request target the server passed on is another spelling
    of the URL than ``SCRIPT_NAME``, ``PATH_INFO`` and ``QUERY_STRING`` make."""
    spelled = None
    for name in RAW_TARGETS:
        raw = environ.get(name)
        if raw is None:
            continue
        if spelled is None:
            spelled = _target(environ)
        if raw != spelled:
            return True
    return False


def _target(environ: WSGIEnvironment) -> str:
    """The request target ``SCRIPT_NAME``, ``PATH_INFO`` and ``QUERY_STRING`` make,
    percent-encoded as a key's path is."""
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    if not PLAIN_PATH.fullmatch(path):
        path = quote(path.encode("latin-1", "replace"), safe=PATH_SAFE)
    query = environ.get("QUERY_STRING")
    return f"{path}?{query}" if query else path


def _environ_name(header: str) -> str:
    return "HTTP_" + header.upper().replace("-", "_")


class Screen:
    """The screening one :class:`Settings` asks for, with the environ names of
    its headers worked out once."""

    def __init__(self, settings: Settings) -> None:
        self.bypass_headers = [(name, _environ_name(name)) for name in settings.bypass_headers]
        self.key_headers = [(name, _environ_name(name)) for name in sorted(settings.key_headers)]
        self.ignored_cookies = settings.ignored_cookies
        self.pass_cookies = settings.cookie_requests == "pass"
        #: The environ names any of whose presence needs a closer look than the
        #: request target's (anything else screening reads is in TARGET_FIELDS).
        self.rare = frozenset(
            [
                "HTTP_TRANSFER_ENCODING",
                "HTTP_COOKIE",
                *(environ_name for _, environ_name in self.bypass_headers + self.key_headers),
            ]
        )

    def __call__(self, environ: WSGIEnvironment) -> Screening:
        """Screen a GET or HEAD request. May remove ignored cookies from
        ``environ`` (the original value is kept under ``ENVIRON_ORIGINAL``)."""
        length = environ.get("CONTENT_LENGTH")
        if length and length.strip() != "0":
            return Screening("request-body")
        rare = not self.rare.isdisjoint(environ)
        if rare:
            if "HTTP_TRANSFER_ENCODING" in environ:
                return Screening("request-body")
            for name, environ_name in self.bypass_headers:
                value = environ.get(environ_name)
                if value is not None:
                    unsafe = name in METHOD_OVERRIDES and value.strip().upper() not in SAFE_METHODS
                    return Screening(name, unsafe)
            if "HTTP_COOKIE" in environ and self._cookies(environ):
                return Screening("cookie")
        if raw_target_differs(environ):
            return RAW_URI
        extra = self.key_extra(environ) if rare else ""
        return Screening(key_extra=extra) if extra else PASS

    def key_extra(self, environ: WSGIEnvironment) -> str:
        """What the request's ``key_headers`` add to its key ("" for nothing)."""
        return "\n".join(
            f"{name}: {environ[environ_name]}"
            for name, environ_name in self.key_headers
            if environ_name in environ
        )

    def key_environ(self, environ: WSGIEnvironment) -> dict[str, str]:
        """The request's ``key_headers``, as environ entries."""
        return {
            environ_name: environ[environ_name]
            for _, environ_name in self.key_headers
            if environ_name in environ
        }

    def _cookies(self, environ: WSGIEnvironment) -> bool:
        """Remove the ignored cookies; True if the request must bypass for the
        others."""
        original = environ["HTTP_COOKIE"]
        kept = [
            pair
            for pair in (part.strip(" \t") for part in original.split(";"))
            if pair and not self._ignored(pair.split("=", 1)[0].strip(" \t"))
        ]
        if kept and self.pass_cookies:
            return True
        environ.setdefault(ENVIRON_ORIGINAL, {})["HTTP_COOKIE"] = original
        if kept:
            environ["HTTP_COOKIE"] = "; ".join(kept)
        else:
            del environ["HTTP_COOKIE"]
        return False

    def _ignored(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, glob) for glob in self.ignored_cookies)
