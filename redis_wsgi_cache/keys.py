"""Cache keys: the primary key of a request (scheme, host, path and query) and the
secondary key of a Vary'd variant (RFC 9111 §4.1). Pure functions of the WSGI
environment."""

from __future__ import annotations

import hashlib
import re
import typing as t
from collections.abc import Iterator, Mapping
from urllib.parse import quote, unquote_to_bytes, urlsplit

from werkzeug.http import parse_set_header

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

_WHITESPACE = re.compile(r"[ \t]+")
# A host name, IPv4 or bracketed IPv6 address, and an optional port.
_HOST = re.compile(r"[a-z0-9._~!$&'()*+,;=%-]+(:[0-9]*)?|\[[0-9a-f:.]+\](:[0-9]*)?")
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}
# What a path keeps unencoded (RFC 3986 §3.3 pchar and "/").
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
# A path that quote() would leave as it is.
_PLAIN_PATH = re.compile(r"[A-Za-z0-9/:@!$&'()*+,;=._~-]*")
_AROUND_COMMAS = re.compile(r"[ \t]*,[ \t]*")


def request_url(environ: WSGIEnvironment) -> str | None:
    """The absolute URL the primary key is made of: scheme and host lower-cased,
    the default port dropped, the path percent-encoded as :func:`canonical_url`
    does. None when the request has no usable host (one with characters a host
    cannot have must not share a key)."""
    scheme = environ["wsgi.url_scheme"].lower()
    host = environ.get("HTTP_HOST")
    if not host:
        host = environ.get("SERVER_NAME", "")
        port = environ.get("SERVER_PORT")
        if port:
            host = f"{host}:{port}"
    host = host.lower()
    if not _HOST.fullmatch(host):
        return None
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "") or "/"
    if not _PLAIN_PATH.fullmatch(path):
        path = quote(path.encode("latin-1"), safe=_PATH_SAFE)
    host = _without_default_port(scheme, host)
    query = environ.get("QUERY_STRING")
    return f"{scheme}://{host}{path}?{query}" if query else f"{scheme}://{host}{path}"


def canonical_url(url: str) -> str:
    """An absolute URL (a ``Location``, say) in the form :func:`request_url`
    gives, so that both name the same key."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = _without_default_port(scheme, parts.netloc.lower())
    path = quote(unquote_to_bytes(parts.path or "/"), safe=_PATH_SAFE)
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{host}{path}{query}"


def _without_default_port(scheme: str, host: str) -> str:
    default = _DEFAULT_PORTS.get(scheme)
    return host[: -len(default)] if default and host.endswith(default) else host


def primary_key(prefix: str, url: str) -> str:
    """The Redis key of a URL. The digest in braces is a Redis Cluster hash tag,
    so a URL's variants, lock and markers all live in one slot."""
    digest = hashlib.sha256(url.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return f"{prefix}:{{{digest}}}"


def vary_names(vary: str | None) -> tuple[str, ...] | None:
    """The sorted, lower-cased, distinct names of a ``Vary`` header; ``()`` when
    there is none and None for ``Vary: *``, which matches no request."""
    if not vary:
        return ()
    names = {name.lower() for name in parse_set_header(vary)}
    if "*" in names:
        return None
    return tuple(sorted(names))


def normalize_value(value: str) -> str:
    """Whitespace normalised as §4.1 allows: runs collapsed, none around commas."""
    if " " not in value and "\t" not in value:
        return value
    return _AROUND_COMMAS.sub(",", _WHITESPACE.sub(" ", value.strip(" \t")))


def request_headers(environ: WSGIEnvironment) -> dict[str, str]:
    """The request's header fields by lower-case name, values normalised."""
    headers: dict[str, str] = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers[key[5:].replace("_", "-").lower()] = normalize_value(value)
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").lower()] = normalize_value(environ[key])
    return headers


class LazyHeaders(Mapping[str, str]):
    """The request's headers as :func:`request_headers` gives them, worked out
    on first use: a hit on a URL without Vary never needs them."""

    def __init__(self, environ: WSGIEnvironment) -> None:
        self._environ = environ
        self._headers: dict[str, str] | None = None

    @property
    def _values(self) -> dict[str, str]:
        if self._headers is None:
            self._headers = request_headers(self._environ)
        return self._headers

    def __getitem__(self, name: str) -> str:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def variant_id(names: t.Iterable[str], headers: t.Mapping[str, str]) -> str:
    """The secondary key of the variant selected by ``names`` (RFC 9111 §4.1).

    An absent header and an empty one are different variants. The lookup script
    in :mod:`redis_wsgi_cache.store` computes the same digest inside Redis.
    """
    parts = [name if name not in headers else f"{name}={headers[name]}" for name in names]
    return hashlib.sha1("\n".join(parts).encode("latin-1", "replace")).hexdigest()
