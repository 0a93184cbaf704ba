"""Stored responses and their Redis hash form."""

from __future__ import annotations

import dataclasses

import pytest
from werkzeug.http import http_date

from redis_wsgi_cache.entry import (
    BODY_FIELDS,
    FIELDS,
    CachedResponse,
    EntryFormatError,
    _allocation,
    body_chunks,
)

ENTRY = CachedResponse(
    url="http://example.com/é",
    status="200 OK",
    headers=[("Content-Type", "text/plain"), ("X-Twice", "1"), ("X-Twice", "2"), ("ETag", 'W/"e"')],
    body_parts=(b"\x00\xffbody",),
    stored_at=1_800_000_000.5,
    initial_age=3.0,
    freshness_lifetime=60.0,
    stale_while_revalidate=5.0,
    stale_if_error=7.0,
    must_revalidate=True,
    shared_auth=True,
    etag='W/"e"',
    tags=("a", "b"),
    started=1_800_000_000_123_456,
)


def as_redis_returns(entry: CachedResponse, suffix: str = "") -> list[bytes | None]:
    """What HMGET of FIELDS answers for ``entry`` stored under ``suffix``."""
    fields = {
        **entry.to_fields(suffix),
        "u" + suffix: entry.url,
        "t" + suffix: " ".join(entry.tags),
    }
    return [
        value.encode("utf-8") if isinstance(value, str) else value
        for value in (fields.get(name + suffix) for name in FIELDS)
    ]


def read_back(entry: CachedResponse, vary: tuple[str, ...] = ()) -> CachedResponse:
    return CachedResponse.from_values(as_redis_returns(entry), vary)


def test_round_trip():
    back = read_back(ENTRY)
    assert back == dataclasses.replace(ENTRY, stored_as=back.stored_as)
    assert back.stored_as.startswith("6;1800000000.5;3;60;5;7;")


def test_the_vary_names_come_from_the_record():
    assert read_back(ENTRY, ("accept",)).vary == ("accept",)


def test_numbers_are_kept_to_the_millisecond():
    entry = dataclasses.replace(ENTRY, stored_at=1_800_000_000.123456, initial_age=0.0004)
    back = read_back(entry)
    # Never older than it is: the time rounded up, the age down.
    assert back.stored_at == 1_800_000_000.124
    assert back.initial_age == 0.0


def test_a_small_response_fits_redis_compact_encoding():
    """Every value within 64 bytes: Redis keeps the hash as a listpack."""
    stored_at = 1_800_000_000.25
    entry = CachedResponse(
        url="http://localhost:5000/users/1",
        status="200 OK",
        headers=[
            ("Content-Type", "application/json"),
            ("Content-Length", "24"),
            ("Date", http_date(stored_at)),
        ],
        body_parts=(b'{"id":1,"name":"Alice"}\n',),
        stored_at=stored_at,
        initial_age=0.0,
        freshness_lifetime=60.0,
    )
    fields = entry.to_fields()
    assert set(fields) == {"v", "h", "b"}
    assert fields["h"] == "Content-Type: application/json"
    assert all(len(value) <= 64 for value in fields.values())
    assert read_back(entry).headers == entry.headers


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([("Date", "Mon, 01 Jan 2024 00:00:00 GMT")], id="another-date"),
        pytest.param([("date", "DATE")], id="lower-case-name"),
        pytest.param([("Content-Length", "5")], id="another-length"),
        pytest.param([("Date", "D"), ("X", "1")], id="not-trailing"),
        pytest.param([("Content-Length", "6"), ("Content-Length", "6")], id="twice"),
    ],
)
def test_headers_that_cannot_be_rebuilt_exactly_are_stored(headers):
    entry = dataclasses.replace(ENTRY, headers=headers, etag=None)
    if headers[0][1] == "DATE":
        entry.headers = [("date", http_date(entry.stored_at))]
    assert read_back(entry).headers == entry.headers


def test_a_compressed_body_keeps_its_length_header():
    entry = dataclasses.replace(
        ENTRY, headers=[("Content-Length", "6")], etag=None, encoding="gzip"
    )
    assert "Content-Length: 6" in entry.to_fields()["h"]
    assert read_back(entry).encoding == "gzip"


@pytest.mark.parametrize("length", [0, 63, 4096, 16_000, 16_384, 20_480, 100_000, 1 << 20])
def test_body_round_trips_whatever_its_split(length):
    body = bytes(range(256)) * (length // 256) + b"x" * (length % 256)
    entry = dataclasses.replace(ENTRY, body_parts=(body,))
    assert read_back(entry).body == body
    assert len(body_chunks(body)) <= len(BODY_FIELDS)


@pytest.mark.parametrize(
    ("length", "parts"),
    [(16_384, 2), (1 << 20, 2), (16_000, 1), (1000, 1)],
)
def test_bodies_are_split_only_where_allocator_classes_waste_memory(length, parts):
    chunks = body_chunks(b"x" * length)
    assert len(chunks) == parts
    used = sum(_allocation(len(chunk)) for chunk in chunks)
    assert used <= _allocation(length)
    if parts > 1:  # all but the last fill their class exactly
        assert all(
            _allocation(len(c)) == len(c) + 6 or _allocation(len(c)) == len(c) + 10
            for c in chunks[:-1]
        )


def test_allocation_classes():
    # jemalloc: 16,384 bytes of body and its 6 bytes of header take 20 KiB.
    assert _allocation(16_384) == 20_480
    assert _allocation(16_378) == 16_384
    assert _allocation(20) == 32


def test_age_and_ttl():
    assert ENTRY.current_age(ENTRY.stored_at + 10) == 13
    assert ENTRY.ttl(ENTRY.stored_at + 10) == 47
    assert ENTRY.current_age(ENTRY.stored_at - 5) == 3  # a clock step back never rejuvenates


def _with(field: str, value: bytes | None) -> list[bytes | None]:
    values = as_redis_returns(ENTRY)
    values[FIELDS.index(field)] = value
    return values


def _meta(replace: str, by: str) -> bytes:
    meta = as_redis_returns(ENTRY)[0]
    assert meta is not None and replace.encode() in meta
    return meta.replace(replace.encode(), by.encode(), 1)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("v", _meta("6;", "5;"), id="other-version"),
        pytest.param("v", b"5", id="format-5"),
        pytest.param("v", None, id="no-meta"),
        pytest.param("h", None, id="no-headers"),
        pytest.param("b", None, id="no-body"),
        pytest.param("u", None, id="no-url"),
        pytest.param("v", _meta(";1;200 OK", ";2;200 OK"), id="missing-body-part"),
        pytest.param("v", _meta(";1;200 OK", ";9;200 OK"), id="bad-part-count"),
        pytest.param("v", _meta("200 OK", "OK"), id="status-without-code"),
        pytest.param("v", _meta("200 OK", "200 OK\r\nX: 1"), id="status-crlf"),
        pytest.param("v", _meta(";60;", ";yesterday;"), id="bad-number"),
        pytest.param("v", _meta(";60;", ";nan;"), id="nan"),
        pytest.param("v", _meta(";60;", ";1e400;"), id="infinite"),
        pytest.param("v", _meta(";60;", ";-1;"), id="negative"),
        pytest.param("v", _meta(";rav;", ";ravX;"), id="unknown-flag"),
        pytest.param("v", _meta(";rav;", ";ravgz;"), id="two-codings"),
        pytest.param("v", _meta(";rav;", ";ra;"), id="validator-flag-without-one"),
        pytest.param("h", b"Content-Type text/plain", id="header-without-colon"),
        pytest.param("h", b"Bad Name: x", id="header-name-not-a-token"),
        pytest.param("h", b"X: a\rb", id="header-cr"),
        pytest.param("h", b"X: \xff", id="header-bad-utf8"),
        pytest.param("u", b"\xff", id="url-bad-utf8"),
    ],
)
def test_malformed_values_are_refused(field, value):
    with pytest.raises(EntryFormatError):
        CachedResponse.from_values(_with(field, value))


def test_wrong_length_is_refused():
    with pytest.raises(EntryFormatError):
        CachedResponse.from_values(as_redis_returns(ENTRY)[:-1])
