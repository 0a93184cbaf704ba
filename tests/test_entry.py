"""Stored responses and their Redis hash form."""

from __future__ import annotations

import pytest

from redis_wsgi_cache.entry import FIELDS, CachedResponse, EntryFormatError

ENTRY = CachedResponse(
    url="http://example.com/é",
    status="200 OK",
    headers=[("Content-Type", "text/plain"), ("X-Twice", "1"), ("X-Twice", "2")],
    body=b"\x00\xffbody",
    stored_at=1_800_000_000.5,
    initial_age=3.0,
    freshness_lifetime=60.0,
    stale_while_revalidate=5.0,
    stale_if_error=7.0,
    must_revalidate=True,
    shared_auth=True,
    etag='W/"e"',
    last_modified="Sun, 06 Nov 1994 08:49:37 GMT",
    vary=("accept", "accept-language"),
)


def as_redis_returns(entry: CachedResponse) -> list[bytes | None]:
    mapping = entry.to_mapping()
    return [
        value if isinstance(value, bytes) else value.encode("utf-8")
        for value in (mapping[name] for name in FIELDS)
    ]


def test_round_trip():
    assert CachedResponse.from_values(as_redis_returns(ENTRY)) == ENTRY


def test_age_and_ttl():
    assert ENTRY.current_age(ENTRY.stored_at + 10) == 13
    assert ENTRY.ttl(ENTRY.stored_at + 10) == 47
    assert ENTRY.current_age(ENTRY.stored_at - 5) == 3  # a clock step back never rejuvenates


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("v", b"1", id="other-version"),
        pytest.param("v", None, id="no-version"),
        pytest.param("body", None, id="missing-field"),
        pytest.param("headers", b"{not json", id="bad-json"),
        pytest.param("headers", b'{"Content-Type": "x"}', id="headers-not-a-list"),
        pytest.param("headers", b'[["a", 1]]', id="header-not-a-string"),
        pytest.param("headers", b'[["a", "b", "c"]]', id="header-triple"),
        pytest.param("status", b"OK", id="status-without-code"),
        pytest.param("stored_at", b"yesterday", id="bad-number"),
        pytest.param("url", b"\xff", id="bad-utf8"),
    ],
)
def test_malformed_values_are_refused(field, value):
    values = as_redis_returns(ENTRY)
    values[FIELDS.index(field)] = value
    with pytest.raises(EntryFormatError):
        CachedResponse.from_values(values)


def test_wrong_length_is_refused():
    with pytest.raises(EntryFormatError):
        CachedResponse.from_values(as_redis_returns(ENTRY)[:-1])
