"""Reading the header fields the cache's rules depend on: Cache-Control
directives (RFC 9111 §5.2) and their targeted form (RFC 9213), delta-seconds
(§1.2.2) and HTTP-dates (RFC 9110 §5.6.7). Pure functions on strings."""

from __future__ import annotations

import re
from datetime import datetime

import http_sf
from werkzeug.http import parse_date, parse_list_header, unquote_header_value

Headers = list[tuple[str, str]]

# RFC 9111 §1.2.2: a delta-seconds too large to represent is this.
MAX_DELTA = 2147483648
CONFLICT = "\x00conflict"
DELTA_DIRECTIVES = frozenset(
    {"max-age", "s-maxage", "stale-while-revalidate", "stale-if-error", "max-stale", "min-fresh"}
)
# RFC 9110 §5.6.2.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# A Structured Fields string (left as it is), or a dictionary member's or a
# parameter's key, in any case (RFC 8941 §3.2, §3.1.2).
_SF_KEY = re.compile(r'"(?:[^"\\]|\\.)*"|(^|[,;])[ \t]*[A-Za-z*][A-Za-z0-9_.*-]*')
# RFC 9110 §5.6.7: IMF-fixdate, and the obsolete RFC 850 and asctime forms.
_HTTP_DATE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
    r" \d{4} \d{2}:\d{2}:\d{2} GMT"
    r"|(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), \d{2}-"
    r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)-\d{2} \d{2}:\d{2}:\d{2} GMT"
    r"|(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
    r" [ \d]\d \d{2}:\d{2}:\d{2} \d{4}",
    re.IGNORECASE,
)


def header(headers: Headers, name: str) -> str | None:
    """The first value of a header, matching its name case-insensitively."""
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def content_length(headers: Headers) -> int | None:
    """The response's ``Content-Length`` as a number; None when absent or invalid."""
    value = header(headers, "content-length")
    return non_negative_integer(value.strip(" \t")) if value is not None else None


def body_complete(headers: Headers, size: int) -> bool:
    """Whether a body of ``size`` bytes is as long as its ``Content-Length``
    said (any body is, without one)."""
    return header(headers, "content-length") is None or content_length(headers) == size


def header_values(headers: Headers, name: str) -> str | None:
    """All values of a header joined as one list (RFC 9110 §5.3)."""
    values = [value for key, value in headers if key.lower() == name]
    return ", ".join(values) if values else None


def parse_cache_control(value: str | None) -> dict[str, str | None]:
    """Cache-Control directives by lower-case name (RFC 9111 §5.2).

    Directive names are case-insensitive, which ``parse_dict_header`` does not
    honour. A directive given twice with different values, or with whitespace
    around its ``=`` (which §5.2's grammar has no room for), is marked
    ``CONFLICT`` so that the caller can act conservatively (§4.2.1).
    """
    directives: dict[str, str | None] = {}
    if not value:
        return directives
    for item in parse_list_header(value):
        name, has_value, argument = item.partition("=")
        spaced = has_value and (name != name.rstrip(" \t") or argument != argument.lstrip(" \t"))
        name = name.strip(" \t").lower()
        if not name:
            continue
        parsed = unquote_header_value(argument.strip(" \t")) if has_value else None
        if spaced:
            parsed = CONFLICT
        if name in directives and directives[name] != parsed:
            directives[name] = CONFLICT
        else:
            directives[name] = parsed
    return directives


def response_directives(headers: Headers) -> tuple[dict[str, str | None], bool]:
    """The response's cache directives, and whether they came from a targeted
    field: ``CDN-Cache-Control`` (RFC 9213), when present and valid, stands in
    for ``Cache-Control`` and ``Expires``; an invalid one is ignored whole."""
    targeted = header_values(headers, "cdn-cache-control")
    if targeted is not None:
        directives = _targeted_directives(targeted)
        if directives is not None:
            return directives, True
    return parse_cache_control(header_values(headers, "cache-control")), False


def _targeted_directives(value: str) -> dict[str, str | None] | None:
    """A targeted cache-control field: a Structured Fields dictionary (RFC 9213
    §2.1, RFC 8941) whose delta-seconds directives must be integers."""
    try:
        members = http_sf.parse(value.encode("latin-1"), tltype="dictionary")
    except (ValueError, UnicodeEncodeError):
        # Directive names are case-insensitive, as Cache-Control's are
        # (RFC 9111 §5.2); Structured Fields keys are lower-case only.
        lowered = _SF_KEY.sub(_lower_key, value)
        if lowered == value:
            return None
        try:
            members = http_sf.parse(lowered.encode("latin-1"), tltype="dictionary")
        except (ValueError, UnicodeEncodeError):
            return None
    directives: dict[str, str | None] = {}
    if not isinstance(members, dict):
        return None
    for name, member in members.items():
        item = member[0] if isinstance(member, tuple) else None
        if item is True:
            directives[name] = None
        elif isinstance(item, int) and not isinstance(item, bool) and item >= 0:
            directives[name] = str(item)
        elif name in DELTA_DIRECTIVES:
            return None
        else:
            directives[name] = str(item)
    return directives


def qualified_fields(directives: dict[str, str | None], name: str) -> frozenset[str] | None:
    """The field names, lower-cased, that a qualified ``no-cache`` or ``private``
    lists (``no-cache="Set-Cookie, X-Foo"``, RFC 9111 §5.2.2.4, §5.2.2.7); None
    when the directive is absent or unqualified, or its list is empty, given
    twice differently, or not of field names."""
    argument = directives.get(name)
    if not argument or argument == CONFLICT:
        return None
    fields = frozenset(item.strip(" \t").lower() for item in argument.split(","))
    if not all(_TOKEN.fullmatch(field) for field in fields):
        return None
    return fields


def _lower_key(match: re.Match[str]) -> str:
    return match.group(0) if match.group(1) is None else match.group(0).lower()


def delta_seconds(directives: dict[str, str | None], name: str) -> int | None:
    """A delta-seconds argument (§1.2.2): None when the directive is absent, -1 when
    its argument is missing, malformed or given twice with different values."""
    if name not in directives:
        return None
    argument = directives[name]
    number = non_negative_integer(argument) if argument is not None else None
    return -1 if number is None else number


def non_negative_integer(text: str) -> int | None:
    """A string of ASCII digits as a number, or None. Numbers past 2^31 count as
    2^31 (RFC 9111 §1.2.2), however many digits they have: converting thousands
    of digits is refused by Python, and slow."""
    if not text.isdigit() or not text.isascii():
        return None
    if len(text) > 10:
        return MAX_DELTA
    return min(int(text), MAX_DELTA)


def date_seconds(value: str | None) -> float | None:
    """An HTTP-date as seconds since the epoch, or None; leniently parsed."""
    parsed: datetime | None = parse_date(value) if value else None
    return parsed.timestamp() if parsed is not None else None


def strict_date_seconds(value: str) -> float | None:
    """An HTTP-date in one of its three forms, or None: what ``Expires`` must be
    to mean a time (RFC 9111 §5.3); ``parse_date`` alone accepts far more."""
    value = value.strip(" \t")
    return date_seconds(value) if _HTTP_DATE.fullmatch(value) else None
