"""One stored response and its mapping to and from the fields of a Redis hash.

The body is stored as raw bytes and the headers as a JSON list of pairs: nothing
read back from Redis is ever unpickled or evaluated.
"""

from __future__ import annotations

import dataclasses
import json
import re

FORMAT_VERSION = b"5"
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


class EntryFormatError(ValueError):
    """A hash that is not a response stored by this version of the cache."""


@dataclasses.dataclass(slots=True)
class CachedResponse:
    """A stored response with what RFC 9111 needs to decide whether to reuse it.
    Treated as immutable (changes make a new one with ``dataclasses.replace``);
    not frozen, since building frozen instances costs a hit twice the time.

    ``stored_at`` is the response time of §4.2.3 and ``initial_age`` its
    ``corrected_initial_age``; the current age is their sum plus the time since.
    ``fetch`` names the fetch that stored it (set by the store when it saves),
    so that a lock taken after a lookup can be refused if the entry changed.
    """

    url: str
    status: str
    headers: list[tuple[str, str]]
    body: bytes
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
    fetch: str = ""
    tags: tuple[str, ...] = ()
    #: the coding the cache compressed ``body`` with ("": as the app sent it)
    encoding: str = ""
    #: when the fetch that stored it took its lock (Redis's clock, µs; 0: none)
    started: int = 0

    @property
    def status_code(self) -> int:
        return int(self.status[:3])

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

    def to_mapping(self) -> dict[str, bytes | str]:
        """The hash fields this entry is stored as."""
        flags = (
            ("r" if self.must_revalidate else "")
            + ("n" if self.no_cache else "")
            + ("a" if self.shared_auth else "")
        )
        return {
            "v": FORMAT_VERSION,
            "url": self.url,
            "status": self.status,
            "headers": json.dumps(self.headers, separators=(",", ":")),
            "body": self.body,
            "stored_at": repr(self.stored_at),
            "age": repr(self.initial_age),
            "fresh": repr(self.freshness_lifetime),
            "swr": repr(self.stale_while_revalidate),
            "sie": repr(self.stale_if_error),
            "flags": flags,
            "etag": self.etag if self.etag is not None else "",
            "lm": self.last_modified if self.last_modified is not None else "",
            "vary": ",".join(self.vary),
            "fetch": self.fetch,
            "tags": " ".join(self.tags),
            "enc": self.encoding,
            "started": str(self.started),
        }

    @classmethod
    def from_mapping(cls, fields: dict[bytes, bytes]) -> CachedResponse:
        """Rebuild an entry from a hash; :class:`EntryFormatError` for anything else."""
        return cls.from_values([fields.get(name.encode()) for name in FIELDS])

    @classmethod
    def from_values(cls, values: list[bytes | None]) -> CachedResponse:
        """Rebuild an entry from the values of :data:`FIELDS`, in that order (what
        ``HMGET`` answers); :class:`EntryFormatError` for anything else."""
        if len(values) != len(FIELDS) or values[0] != FORMAT_VERSION:
            raise EntryFormatError("missing or unknown format version")
        present = [value for value in values if isinstance(value, bytes)]
        if len(present) != len(FIELDS):
            raise EntryFormatError("missing fields")
        (_, url, status, headers, body, stored_at, age, fresh, swr, sie, flags, etag,
         last_modified, vary, fetch, tags, enc, started) = present  # fmt: skip
        try:
            pairs = servable_headers(json.loads(headers))
            status_line = status.decode("utf-8")
            if not _STATUS.fullmatch(status_line):
                raise EntryFormatError(f"bad status {status_line[:40]!r}")
            names = vary.decode("ascii")
            vary_names = tuple(names.split(",")) if names else ()
            if not all(_NAME.fullmatch(name) for name in vary_names):
                raise EntryFormatError("bad Vary names")
            validators = [etag.decode("utf-8"), last_modified.decode("utf-8")]
            if not all(_VALUE.fullmatch(value) for value in validators):
                raise EntryFormatError("bad validators")
            return cls(
                url=url.decode("utf-8"),
                status=status_line,
                headers=pairs,
                body=body,
                stored_at=_seconds(stored_at, 0.0, MAX_TIMESTAMP),
                initial_age=_seconds(age, 0.0, MAX_SECONDS),
                freshness_lifetime=_seconds(fresh, 0.0, MAX_SECONDS),
                stale_while_revalidate=_seconds(swr, 0.0, MAX_SECONDS),
                stale_if_error=_seconds(sie, 0.0, MAX_SECONDS),
                must_revalidate=b"r" in flags,
                no_cache=b"n" in flags,
                shared_auth=b"a" in flags,
                etag=validators[0] or None,
                last_modified=validators[1] or None,
                vary=vary_names,
                fetch=fetch.decode("ascii"),
                tags=tuple(tags.decode("utf-8").split()),
                encoding=_encoding(enc),
                started=microseconds(started),
            )
        except EntryFormatError:
            raise
        except (ValueError, TypeError, RecursionError) as error:
            # RecursionError: JSON nested deeper than the parser goes.
            raise EntryFormatError(f"malformed entry: {type(error).__name__}") from None


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


def _encoding(value: bytes) -> str:
    if value not in (b"", b"gzip", b"zstd"):
        raise EntryFormatError("unknown body coding")
    return value.decode()


def _seconds(value: bytes, low: float, high: float) -> float:
    """A stored number of seconds, finite and within [low, high]."""
    number = float(value)
    if not low <= number <= high:  # also refuses nan and inf
        raise EntryFormatError(f"{number!r} is out of range")
    return number


# The hash fields of an entry, in the order from_values expects them.
FIELDS = ("v", "url", "status", "headers", "body", "stored_at", "age", "fresh", "swr", "sie",
          "flags", "etag", "lm", "vary", "fetch", "tags", "enc", "started")  # fmt: skip
