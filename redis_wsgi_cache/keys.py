"""Cache keys: the primary key of a request (scheme, host, path and query) and the
secondary key of a Vary'd variant (RFC 9111 §4.1). Pure functions of the WSGI
environment.

URLs are canonical, so that every spelling of one URL names one key: scheme and
host lower-cased, the default port dropped, the path percent-encoded one way, and
the query normalised by :class:`QueryNormalizer` (parameters ignored as the
operator says, the others percent-encoded one way and, by default, sorted)."""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import re
import typing as t
from collections.abc import Iterable, Iterator, Mapping
from urllib.parse import quote, quote_plus, unquote_to_bytes, urlsplit

from werkzeug.http import parse_accept_header, parse_set_header

if t.TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

_WHITESPACE = re.compile(r"[ \t]+")
# A host name, IPv4 or bracketed IPv6 address, and an optional port.
_HOST = re.compile(r"[a-z0-9._~!$&'()*+,;=%-]+(:[0-9]*)?|\[[0-9a-f:.]+\](:[0-9]*)?")
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}
# What a path keeps unencoded (RFC 3986 §3.3 pchar and "/").
PATH_SAFE = "/:@!$&'()*+,;=-._~"
# A path that quote() would leave as it is.
PLAIN_PATH = re.compile(r"[A-Za-z0-9/:@!$&'()*+,;=._~-]*")
_AROUND_COMMAS = re.compile(r"[ \t]*,[ \t]*")
# What a query's names and values keep unencoded: RFC 3986 §3.4 query characters,
# less the "&", "=" and "+" that delimit and encode them.
_QUERY_SAFE = "-._~!$'()*,;:@/?"
# RFC 9110 §8.4.1 content codings a response may be compressed with, in the
# order a server prefers them when a client accepts several equally.
ENCODINGS = ("br", "zstd", "gzip")


class QueryNormalizer:
    """A query string as the key holds it, and as the app gets it.

    The query is split on ``&`` only (never ``;``), as werkzeug parses it, once.
    Parameters whose (decoded) name matches one of ``ignored`` are dropped from
    both: the app cannot reflect what the key does not hold. For the key, names
    and values are percent-encoded one way, so ``%64`` and ``d`` are one key, and
    with ``sort`` the parameters are ordered by name (values of one name keep
    their order, which an app can see).
    """

    def __init__(self, ignored: Iterable[str] = (), sort: bool = True) -> None:
        globs = [fnmatch.translate(glob) for glob in ignored]
        self._ignored = re.compile("|".join(globs)) if globs else None
        self.sort = sort

    def __call__(self, query: str) -> tuple[str, str]:
        """``query`` (a WSGI ``QUERY_STRING``) for the key, and for the app."""
        if not query:
            return "", ""
        kept: list[tuple[bytes, str, str]] = []
        dropped = False
        for pair in query.split("&"):
            if not pair:
                dropped = True
                continue
            name, has_value, value = pair.partition("=")
            decoded = _unquote(name)
            if self._ignored is not None and self._ignored.match(
                decoded.decode("utf-8", "surrogateescape")
            ):
                dropped = True
                continue
            canonical = quote_plus(decoded, safe=_QUERY_SAFE)
            if has_value:
                canonical += "=" + quote_plus(_unquote(value), safe=_QUERY_SAFE)
            kept.append((decoded, canonical, pair))
        if self.sort:
            kept.sort(key=lambda item: item[0])
        for_key = "&".join(canonical for _, canonical, _ in kept)
        for_app = "&".join(pair for _, _, pair in kept) if dropped else query
        return for_key, for_app


def _unquote(text: str) -> bytes:
    """A query name or value as the bytes it stands for ("+" is a space)."""
    return unquote_to_bytes(text.replace("+", " ").encode("latin-1", "surrogateescape"))


def request_url(environ: WSGIEnvironment, query: str | None = None) -> str | None:
    """The absolute URL the primary key is made of: scheme and host lower-cased,
    the default port dropped, the path percent-encoded as :func:`canonical_url`
    does, and ``query`` (the normalised query) if given, else the request's as it
    is. None when the request has no usable host (one with characters a host
    cannot have must not share a key)."""
    host = environ.get("HTTP_HOST")
    if not host:
        host = environ.get("SERVER_NAME", "")
        port = environ.get("SERVER_PORT")
        if port:
            host = f"{host}:{port}"
    origin = _origin(environ["wsgi.url_scheme"], host) if len(host) <= _MAX_HOST else None
    if origin is None:
        return None
    path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "") or "/"
    if not PLAIN_PATH.fullmatch(path):
        path = quote(path.encode("latin-1"), safe=PATH_SAFE)
    if query is None:
        query = environ.get("QUERY_STRING")
    return f"{origin}{path}?{query}" if query else f"{origin}{path}"


# The longest host a key is made for: a 253-octet DNS name (RFC 1035) and a port.
_MAX_HOST = 259


@functools.lru_cache(maxsize=256)
def _origin(scheme: str, host: str) -> str | None:
    """``scheme://host`` as a key has it, or None for a host that cannot be one
    (remembered: a process sees few)."""
    scheme, host = scheme.lower(), host.lower()
    if not _HOST.fullmatch(host):
        return None
    return f"{scheme}://{_without_default_port(scheme, host)}"


def canonical_url(url: str, normalize: QueryNormalizer | None = None) -> str:
    """An absolute URL (a ``Location``, a URL to purge) in the form
    :func:`request_url` gives, so that both name the same key; its query
    normalised with ``normalize`` if given. :class:`ValueError` for a URL that
    is not absolute."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an absolute http(s) URL: {url!r}")
    host = _without_default_port(scheme, parts.netloc.lower())
    path = quote(unquote_to_bytes(parts.path or "/"), safe=PATH_SAFE)
    query = normalize(parts.query)[0] if normalize is not None else parts.query
    return f"{scheme}://{host}{path}?{query}" if query else f"{scheme}://{host}{path}"


def forwarded_url(
    environ: WSGIEnvironment, url: str, normalize: QueryNormalizer | None = None
) -> str | None:
    """The URL a client behind a reverse proxy asked for: ``url`` with the scheme,
    host, port and path prefix the request's ``X-Forwarded-*`` or ``Forwarded``
    headers give (their first values, as ``ProxyFix`` reads them by default).
    None when they give none, or nothing that makes a URL. Only purges use it:
    keys hold those headers' values as they came."""
    forwarded = {}
    if environ.get("HTTP_FORWARDED"):
        element = environ["HTTP_FORWARDED"].split(",", 1)[0]
        for pair in element.split(";"):
            name, _, value = pair.strip().partition("=")
            forwarded[name.lower()] = value.strip('"')

    def first(name: str) -> str | None:
        value = environ.get(name)
        return value.split(",", 1)[0].strip() if value else None

    proto = first("HTTP_X_FORWARDED_PROTO") or forwarded.get("proto")
    host = first("HTTP_X_FORWARDED_HOST") or forwarded.get("host")
    port = first("HTTP_X_FORWARDED_PORT")
    prefix = first("HTTP_X_FORWARDED_PREFIX") or ""
    if not (proto or host or port or prefix):
        return None
    parts = urlsplit(url)
    host = host or parts.netloc
    if port:
        host = f"{host.rsplit(':', 1)[0] if not host.endswith(']') else host}:{port}"
    query = f"?{parts.query}" if parts.query else ""
    try:
        return canonical_url(
            f"{proto or parts.scheme}://{host}{prefix.rstrip('/')}{parts.path}{query}", normalize
        )
    except ValueError:
        return None


def _without_default_port(scheme: str, host: str) -> str:
    default = _DEFAULT_PORTS.get(scheme)
    return host[: -len(default)] if default and host.endswith(default) else host


# The narrowest span of expiry times one URL index bucket covers (seconds).
BUCKET_SPAN = 64


def index_registries(prefix: str) -> tuple[str, str]:
    """The two sorted sets that list the indexes purges walk, in one Redis
    Cluster slot: the URL buckets (members ``<span>:<number>``, scored by when
    every entry they list has expired) and the tag indexes (members the tags'
    digests, scored by when their last entry expires)."""
    return f"{prefix}:{{{prefix}:index}}:ru", f"{prefix}:{{{prefix}:index}}:rt"


def url_bucket(prefix: str, expires: float, ttl: float) -> tuple[str, str, int]:
    """The URL index bucket of an entry Redis keeps until ``expires`` (for
    ``ttl`` seconds): its key, its member in the registry, and when every entry
    it can list has expired. Buckets cover spans of expiry times, wider for
    longer-lived entries (an eighth of the ttl, in powers of two), so that a
    handful are live at a time and each is dropped whole once its span is over."""
    span = BUCKET_SPAN
    while span * 8 < ttl:
        span *= 2
    number = int(expires // span)
    member = f"{span}:{number}"
    return bucket_key(prefix, member), member, (number + 1) * span


def bucket_key(prefix: str, member: str) -> str:
    """The URL index bucket a registry member names: the canonical URLs of the
    entries it lists, in lexical order (all scored 0)."""
    return f"{prefix}:{{{prefix}:index}}:u:{member}"


def index_member(url: str, key: str, prefix: str, stamp: str) -> str:
    """What a URL index bucket holds for one store of an entry: its URL,
    followed by a newline and the digest of its key when that is not the URL's
    own (key material), then a NUL and the store's stamp (its ``stored_at``),
    so that the sweep can remove a member whose entry has gone without ever
    removing one a later store added."""
    if key != primary_key(prefix, url):
        url = f"{url}\n{digest_of(key, prefix)}"
    return f"{url}\x00{stamp}"


def member_target(member: str, prefix: str) -> tuple[str, str]:
    """The key a URL index member names, and the stamp of its store."""
    url, _, stamp = member.partition("\x00")
    url, newline, digest = url.partition("\n")
    return (key_of(digest, prefix) if newline else primary_key(prefix, url)), stamp


def digest_of(key: str, prefix: str) -> str:
    """The digest inside a primary key (between the braces)."""
    return key[len(prefix) + 2 : -1]


def key_of(digest: str, prefix: str) -> str:
    """The primary key of a digest."""
    return f"{prefix}:{{{digest}}}"


def tag_index_key(prefix: str, tag: str) -> str:
    """The sorted set of the digests of the entries tagged ``tag``, scored by
    when they expire."""
    return tag_key_of(prefix, tag_digest(tag))


def tag_key_of(prefix: str, digest: str) -> str:
    """The tag index of a tag's digest."""
    return f"{prefix}:tag:{{{digest}}}"


def tag_digest(tag: str) -> str:
    return hashlib.sha256(tag.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def primary_key(prefix: str, url: str) -> str:
    """The Redis key of a URL. The digest in braces is a Redis Cluster hash tag,
    so a URL's variants, lock and markers all live in one slot."""
    digest = hashlib.sha256(url.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return key_of(digest, prefix)


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

    __slots__ = ("_environ", "_headers")

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

    An absent header and an empty one are different variants. Values are
    compared after whitespace normalisation, and those of a field with a known
    grammar as :data:`NORMALIZERS` says.
    """
    parts = [
        name
        if name not in headers
        else f"{name}={NORMALIZERS[name](headers[name]) if name in NORMALIZERS else headers[name]}"
        for name in names
    ]
    return hashlib.sha256("\n".join(parts).encode("latin-1", "replace")).hexdigest()[:16]


def preferred_encoding(value: str) -> str:
    """The content coding a server picks for an ``Accept-Encoding`` (RFC 9110
    §12.5.3): the acceptable one of :data:`ENCODINGS` with the highest q-value,
    ties going to the server's order, else ``identity``. Requests that would get
    the same response share a variant (as Varnish and Fastly normalise it)."""
    accepted = parse_accept_header(value)
    best, best_quality = "identity", 0.0
    for encoding in ENCODINGS:
        quality = accepted[encoding]  # "*" counts for encodings not named
        if quality > best_quality:
            best, best_quality = encoding, quality
    return best


def language_preferences(value: str) -> str:
    """An ``Accept-Language`` in one canonical form (RFC 9110 §12.5.4): tags
    lower-cased, ordered by q-value then tag, q-values as numbers, so that
    values that mean the same select one variant."""
    accepted = parse_accept_header(value.lower())
    ranked = sorted(((-quality, tag) for tag, quality in accepted if quality > 0))
    return ",".join(f"{tag};q={-quality:g}" for quality, tag in ranked)


# Fields whose values are compared by what they mean, not how they are spelled.
NORMALIZERS: dict[str, t.Callable[[str], str]] = {
    "accept-encoding": preferred_encoding,
    "accept-language": language_preferences,
}
