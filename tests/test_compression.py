"""Bodies compressed in Redis: stored once compressed, sent as stored to clients
that accept the coding and decoded for the others, never mistaken for the
app's own encoding. Against the suite's Redis."""

from __future__ import annotations

import gzip
import json
import time

import pytest
import zstandard
from webtest import TestApp
from wsgi_apps import Origin, call, stored_entries

from redis_wsgi_cache.keys import primary_key

PAGE = json.dumps([{"id": n, "name": f"user {n}", "bio": "likes caching"} for n in range(300)])
BODY = PAGE.encode()


def origin(**headers: str) -> Origin:
    return Origin(
        BODY,
        headers=[
            ("Content-Type", "application/json"),
            ("Cache-Control", "max-age=60"),
            ("ETag", '"v1"'),
            *headers.items(),
        ],
    )


DECODE = {"gzip": gzip.decompress, "zstd": zstandard.ZstdDecompressor().decompress}


def get(middleware, path="/users", **headers):
    """One raw WSGI request (WebTest would decode the body for us)."""
    return call(middleware, path, **headers)


@pytest.mark.parametrize("coding", ["gzip", "zstd"])
def test_stored_compressed_sent_as_stored_or_decoded(cached, redis_client, coding):
    middleware = cached(origin(), prefix="z", compress=coding)
    assert get(middleware)[2] == BODY  # the client that asked gets what the app said
    stored = redis_client.hget(primary_key("z", "http://localhost/users"), "b")
    assert len(stored) < len(BODY) / 5
    assert DECODE[coding](stored) == BODY

    _, headers, body = get(middleware, accept_encoding=f"{coding}, identity")
    assert headers["X-Cache"] == "HIT"
    assert headers["Content-Encoding"] == coding
    assert headers["Content-Length"] == str(len(stored))
    assert headers["ETag"] == 'W/"v1"'  # another representation
    assert "Accept-Encoding" in headers["Vary"]
    assert DECODE[coding](body) == BODY

    _, headers, body = get(middleware, accept_encoding="identity")
    assert headers["X-Cache"] == "HIT"
    assert "Content-Encoding" not in headers
    assert headers["Content-Length"] == str(len(BODY))
    assert headers["ETag"] == '"v1"'
    assert "Accept-Encoding" in headers["Vary"]
    assert body == BODY


def test_what_is_not_compressed(cached, redis_client):
    small = Origin(b"{}", headers=[("Content-Type", "application/json")])
    image = Origin(BODY, headers=[("Content-Type", "image/png")])
    app_encoded = Origin(
        gzip.compress(BODY),
        headers=[("Content-Type", "application/json"), ("Content-Encoding", "gzip")],
    )
    for name, app in (("small", small), ("image", image), ("encoded", app_encoded)):
        middleware = cached(app, prefix=name, compress="gzip")
        get(middleware, "/")
        meta = redis_client.hget(primary_key(name, "http://localhost/"), "v")
        flags = meta.split(b";")[6]
        assert not set(flags) & set(b"gz"), name
        _, headers, body = get(middleware, "/", accept_encoding="gzip")
        assert headers["X-Cache"] == "HIT"
        assert body == app.body


def test_a_range_of_a_compressed_entry_is_of_the_decoded_body(cached, redis_client):
    middleware = cached(origin(), prefix="z", compress="gzip")
    get(middleware)
    status, headers, body = get(middleware, range="bytes=0-9", accept_encoding="gzip")
    assert (status, body) == ("206 Partial Content", BODY[:10])
    assert headers["Content-Range"] == f"bytes 0-9/{len(BODY)}"
    assert "Content-Encoding" not in headers


def test_head_and_revalidation_keep_the_coding(cached, redis_client, clock):
    source = origin()
    middleware = cached(source, prefix="z", compress="gzip")
    get(middleware)
    app = TestApp(middleware)
    head = app.head("/users", headers={"Accept-Encoding": "gzip"})
    assert head.headers["X-Cache"] == "HIT"
    assert head.body == b""
    clock.advance(120)  # stale: revalidated with its ETag, answered 304
    source.status = "304 Not Modified"
    source.body = b""
    _, headers, body = get(middleware)
    assert "fwd-status=304" in headers["Cache-Status"]
    assert body == BODY
    _, headers, body = get(middleware, accept_encoding="gzip")
    assert (headers["X-Cache"], headers["Content-Encoding"]) == ("HIT", "gzip")
    assert gzip.decompress(body) == BODY


def test_the_near_cache_serves_compressed_entries(cached, redis_client):
    middleware = cached(origin(), prefix="z", compress="gzip", near_cache_size=10)
    get(middleware)  # stored; and the near cache's subscriber starts
    near_hits: set[str | None] = set()
    deadline = time.monotonic() + 10
    while near_hits != {"gzip", None}:
        assert time.monotonic() < deadline, f"near-cache hits seen: {near_hits}"
        for encoding in ("gzip", "identity"):
            _, headers, body = get(middleware, accept_encoding=encoding)
            coded = headers.get("Content-Encoding")
            assert coded == (None if encoding == "identity" else "gzip")
            assert (gzip.decompress(body) if coded else body) == BODY
            if headers["Cache-Status"].endswith("detail=near"):
                near_hits.add(coded)
        time.sleep(0.01)  # while the near cache's subscription comes up
    assert len(stored_entries(redis_client)) == 1
