"""One stored response and its mapping to and from the fields of a Redis hash.

The body is stored as raw bytes and the headers as text lines: nothing read
back from Redis is ever unpickled or evaluated. The fields are few and short,
so that Redis keeps a small response as a compact listpack (every value within
``hash-max-listpack-value``, 64 bytes by default):

- ``v``: what RFC 9111 needs, ``;``-separated: the format version (``6``),
  ``stored_at``, ``initial_age``, the freshness lifetime, the
  stale-while-revalidate and stale-if-error windows, flags, when the fetch that
  stored it started (Redis's clock, µs; 0 if no one waits on it), the number of
  body fields, and last the status line;
- ``h``: the header lines, ``Name: value``, one a line; a trailing ``Date`` equal
  to ``stored_at`` and a trailing ``Content-Length`` equal to the body's length
  are not stored but flagged (``D``, ``L``), and rebuilt as they were;
- ``b`` (then ``b1``, ``b2``, ``b3``): the body, split only where that saves
  memory (see :func:`body_chunks`);
- per key: ``u``, the URL, and ``t``, the tags, space-separated.

A variant of a response with ``Vary`` stores the same fields with the suffix
``:<variant id>`` in the hash of its URL.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence

from werkzeug.http import http_date

FORMAT_VERSION = "6"
# RFC 9111 §1.2.2: the largest delta-seconds a cache needs to represent.
MAX_SECONDS = 2147483648.0
# A time far beyond any stored response's (the year 5138).
MAX_TIMESTAMP = 1e11
# What a WSGI server accepts (PEP 3333, RFC 9110 §5): a status line of three
# digits and a reason, token header names, and latin-1 values without control
# characters other than tab.
_STATUS = re.compile(r"[1-5][0-9]{2} [\t\x20-\x7e\x80-\xff]*")
_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
# Flags: must-revalidate, no-cache, shared despite Authorization, has a
# validator; the body's coding; and the headers left out (in the order removed).
_FLAGS = {"r": "must_revalidate", "n": "no_cache", "a": "shared_auth"}
_CODINGS = {"g": "gzip", "z": "zstd"}
_LETTERS = {coding: letter for letter, coding in _CODINGS.items()}
_DERIVED = frozenset("DL")
_ALL_FLAGS = frozenset(_FLAGS) | frozenset(_CODINGS) | _DERIVED | {"v"}
_META_PARTS = 10

# The fields of one response, in the order from_values expects them, and the
# fields of its key. Variants' fields carry the suffix ``:<variant id>``.
BODY_FIELDS = ("b", "b1", "b2", "b3")
RESPONSE_FIELDS = ("v", "h", *BODY_FIELDS)
KEY_FIELDS = ("u", "t")
FIELDS = (*RESPONSE_FIELDS, *KEY_FIELDS)


class EntryFormatError(ValueError):
    """A hash that is not a response stored by this version of the cache."""


@dataclasses.dataclass(slots=True)
class CachedResponse:
    """A stored response with what RFC 9111 needs to decide whether to reuse it.
    Treated as immutable (changes make a new one with ``dataclasses.replace``);
    not frozen, since building frozen instances costs a hit twice the time.

    ``stored_at`` is the response time of §4.2.3 and ``initial_age`` its
    ``corrected_initial_age``; the current age is their sum plus the time since.
    ``stored_as`` is its ``v`` field as Redis held it when read, so that a lock
    taken after a lookup can be refused if the entry changed meanwhile.
    """

    url: str
    status: str
    headers: list[tuple[str, str]]
    #: the body, in the parts it was stored in (one, but for long bodies)
    body_parts: tuple[bytes, ...]
    stored_at: float
    initial_age: float
    freshness_lifetime: float
    stale_while_revalidate: float = 0.0
    stale_if_error: float = 0.0
    must_revalidate: bool = False
    no_cache: bool = False
    shared_auth: bool = False
    etag: str | None = None
    last_modified: str | None = None
    vary: tuple[str, ...] = ()
    stored_as: str = ""
    tags: tuple[str, ...] = ()
    #: the coding the cache compressed ``body`` with ("": as the app sent it)
    encoding: str = ""
    #: when the fetch that stored it took its lock (Redis's clock, µs; 0: none)
    started: int = 0

    @property
    def status_code(self) -> int:
        return int(self.status[:3])

    @property
    def body(self) -> bytes:
        """The whole body (its parts joined: a copy, unless it has one part)."""
        parts = self.body_parts
        return parts[0] if len(parts) == 1 else b"".join(parts)

    @property
    def body_length(self) -> int:
        return sum(len(part) for part in self.body_parts)

    @property
    def has_validator(self) -> bool:
        return self.etag is not None or self.last_modified is not None

    def current_age(self, now: float) -> float:
        """RFC 9111 §4.2.3 ``current_age``."""
        return self.initial_age + max(0.0, now - self.stored_at)

    def ttl(self, now: float) -> float:
        """Seconds of freshness left; negative once stale (RFC 9211 ``ttl``)."""
        return self.freshness_lifetime - self.current_age(now)

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None

    def to_fields(self, suffix: str = "") -> dict[str, bytes | str]:
        """The hash fields of this response (``v``, ``h`` and the body's), each
        name followed by ``suffix``; the key's fields (``u``, ``t``) are the
        store's to write."""
        # Times and ages to the millisecond, never older than they are.
        stored_at = _number(self.stored_at, math.ceil)
        headers = list(self.headers)
        derived = ""
        while headers:
            name, value = headers[-1]
            if name == "Date" and "D" not in derived and value == http_date(float(stored_at)):
                derived += "D"
            elif (
                name == "Content-Length"
                and "L" not in derived
                and not self.encoding
                and value == str(self.body_length)
            ):
                derived += "L"
            else:
                break
            headers.pop()
        flags = "".join(letter for letter, name in _FLAGS.items() if getattr(self, name))
        if self.has_validator:
            flags += "v"
        if self.encoding:
            flags += _LETTERS[self.encoding]
        chunks = body_chunks(self.body)
        meta = ";".join(
            (
                FORMAT_VERSION,
                stored_at,
                _number(self.initial_age, math.floor),
                _number(self.freshness_lifetime),
                _number(self.stale_while_revalidate),
                _number(self.stale_if_error),
                flags + derived,
                str(self.started),
                str(len(chunks)),
                self.status,
            )
        )
        fields: dict[str, bytes | str] = {
            "v" + suffix: meta,
            "h" + suffix: "\n".join(f"{name}: {value}" for name, value in headers),
        }
        for name, chunk in zip(BODY_FIELDS, chunks, strict=False):
            fields[name + suffix] = chunk
        return fields

    @classmethod
    def from_values(
        cls, values: Sequence[bytes | None], vary: tuple[str, ...] = ()
    ) -> CachedResponse:
        """Rebuild an entry from the values of :data:`FIELDS`, in that order
        (what ``HMGET`` answers), and the Vary names of its variant;
        :class:`EntryFormatError` for anything else."""
        if len(values) != len(FIELDS):
            raise EntryFormatError("missing fields")
        meta, lines, *body_values, url, tags = values
        if meta is None or lines is None or url is None:
            raise EntryFormatError("missing fields")
        try:
            parts = meta.decode("utf-8").split(";", _META_PARTS - 1)
            if len(parts) != _META_PARTS or parts[0] != FORMAT_VERSION:
                raise EntryFormatError("missing or unknown format version")
            _, stored_at, age, fresh, swr, sie, flags, started, count, status = parts
            if not _STATUS.fullmatch(status):
                raise EntryFormatError(f"bad status {status[:40]!r}")
            if not set(flags) <= _ALL_FLAGS:
                raise EntryFormatError("unknown flags")
            chunks = body_values[: int(count)] if count in ("1", "2", "3", "4") else [None]
            pieces = tuple(chunk for chunk in chunks if chunk is not None)
            if len(pieces) != len(chunks):
                raise EntryFormatError("missing body")
            headers = header_lines(lines.decode("utf-8"))
            stored_seconds = _seconds(stored_at, MAX_TIMESTAMP)
            for letter in reversed([letter for letter in flags if letter in _DERIVED]):
                if letter == "D":
                    headers.append(("Date", http_date(stored_seconds)))
                else:
                    headers.append(("Content-Length", str(sum(len(part) for part in pieces))))
            codings = [_CODINGS[letter] for letter in flags if letter in _CODINGS]
            entry = cls(
                url=url.decode("utf-8"),
                status=status,
                headers=headers,
                body_parts=pieces,
                stored_at=stored_seconds,
                initial_age=_seconds(age, MAX_SECONDS),
                freshness_lifetime=_seconds(fresh, MAX_SECONDS),
                stale_while_revalidate=_seconds(swr, MAX_SECONDS),
                stale_if_error=_seconds(sie, MAX_SECONDS),
                vary=vary,
                stored_as=meta.decode("utf-8"),
                tags=tuple(tags.decode("utf-8").split()) if tags else (),
                encoding=codings[0] if len(codings) == 1 else "",
                started=microseconds(started),
                must_revalidate="r" in flags,
                no_cache="n" in flags,
                shared_auth="a" in flags,
            )
        except EntryFormatError:
            raise
        except (ValueError, TypeError) as error:
            raise EntryFormatError(f"malformed entry: {type(error).__name__}") from None
        if len(codings) > 1:
            raise EntryFormatError("two body codings")
        entry.etag = entry.header("etag")
        entry.last_modified = entry.header("last-modified")
        if ("v" in flags) != entry.has_validator:
            raise EntryFormatError("validator flag does not match the headers")
        return entry


def header_lines(text: str) -> list[tuple[str, str]]:
    """Header lines (``Name: value``, one a line) as (name, value) pairs, if a
    WSGI server would send them: token names, latin-1 values without CR, LF or
    other control characters; :class:`EntryFormatError` otherwise."""
    pairs: list[tuple[str, str]] = []
    if not text:
        return pairs
    for line in text.split("\n"):
        name, colon, value = line.partition(": ")
        if not colon or not _NAME.fullmatch(name) or not _VALUE.fullmatch(value):
            raise EntryFormatError(f"header line {line[:40]!r} cannot be sent")
        pairs.append((name, value))
    return pairs


def servable_headers(headers: object) -> list[tuple[str, str]]:
    """``headers`` as a list of (name, value) pairs, if a WSGI server would send
    them: token names, latin-1 values without CR, LF or other control
    characters; :class:`EntryFormatError` otherwise."""
    if type(headers) is not list:
        raise EntryFormatError("headers are not a list")
    pairs: list[tuple[str, str]] = []
    for pair in headers:
        if type(pair) not in (list, tuple) or len(pair) != 2:
            raise EntryFormatError("headers are not a list of pairs")
        name, value = pair
        if type(name) is not str or type(value) is not str:
            raise EntryFormatError("headers are not a list of pairs of strings")
        if not _NAME.fullmatch(name) or not _VALUE.fullmatch(value):
            raise EntryFormatError(f"header {name[:40]!r} cannot be sent")
        pairs.append((name, value))
    return pairs


def servable_status(status: object) -> bool:
    """Whether a WSGI server would send ``status`` as a status line."""
    return type(status) is str and _STATUS.fullmatch(status) is not None


def microseconds(value: object) -> int:
    """A time by Redis's clock in microseconds, as the scripts give it (digits);
    0 for anything else."""
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    return int(text) if text.isdigit() and text.isascii() and len(text) < 20 else 0


# The body's fields. Redis keeps each hash value (past the listpack's 64 bytes)
# in an allocation of its own, of the allocator's size class: jemalloc, Redis's
# own on Linux, has four classes to each doubling, so that a 16 KiB body
# (16,390 bytes with its header) takes 20 KiB. A body that wastes much is split
# so that each part but the last fills a class exactly; an extra field costs
# about FIELD_COST bytes (and, with another allocator, saves nothing), so the
# split is made only where it saves more than that and a 32nd of the body.
FIELD_COST = 112
SPLIT_FROM = 4096


def _allocation(length: int) -> int:
    """The jemalloc size class of a Redis string of ``length`` bytes (its sds
    header and terminating NUL included)."""
    size = length + (4 if length < 256 else 6 if length < 65536 else 10)
    if size <= 128:
        return -(-size // 16) * 16
    base = 1 << (size - 1).bit_length() - 1
    step = base >> 2
    return base + -(-(size - base) // step) * step


def _fitting(length: int) -> int:
    """The longest part of at most ``length`` bytes whose allocation wastes
    nothing."""
    for overhead in (10, 6):
        size = length + overhead
        base = 1 << size.bit_length() - 1
        step = base >> 2
        part = base + (size - base) // step * step - overhead
        if _allocation(part) == part + overhead:
            return part
    return length


def body_chunks(body: bytes) -> list[bytes]:
    """``body`` in at most four parts: one, unless splitting it at allocator
    size classes saves more memory than the fields it adds cost."""
    if len(body) < SPLIT_FROM:
        return [body]
    sizes: list[int] = []
    rest = len(body)
    while len(sizes) < len(BODY_FIELDS) - 1 and rest >= SPLIT_FROM:
        part = _fitting(rest)
        sizes.append(part)
        rest -= part
    if rest:
        sizes.append(rest)
    split = sum(_allocation(size) for size in sizes) + FIELD_COST * (len(sizes) - 1)
    if split + len(body) // 32 >= _allocation(len(body)):
        return [body]
    chunks, start = [], 0
    for size in sizes:
        chunks.append(body[start : start + size])
        start += size
    return chunks


def _number(value: float, to_integer: Callable[[float], int] = round) -> str:
    """A number of seconds as stored: in milliseconds made whole with
    ``to_integer``, written as seconds without trailing zeros."""
    if not math.isfinite(value):
        raise ValueError(f"{value!r} is not a finite number of seconds")
    # round() first: 0.1 * 1000 is 100.00000000000001, which ceil makes 101.
    milliseconds = to_integer(round(value * 1000, 6))
    whole, part = divmod(abs(milliseconds), 1000)
    sign = "-" if milliseconds < 0 else ""
    return f"{sign}{whole}.{part:03d}".rstrip("0").rstrip(".")


def _seconds(text: str, high: float) -> float:
    """A stored number of seconds, finite and within [0, high]."""
    number = float(text)
    if not 0.0 <= number <= high:  # also refuses nan and inf
        raise EntryFormatError(f"{number!r} is out of range")
    return number
