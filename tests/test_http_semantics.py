"""RFC 9111 shared-cache behaviour end to end: WebTest, the middleware and the
suite's real Redis. The ``clock`` fixture moves the middleware's time."""

from __future__ import annotations

import pytest
from webtest import TestApp
from werkzeug.http import http_date
from wsgi_apps import Origin, stored_entries

from redis_wsgi_cache.keys import primary_key


def app_for(cached, origin, **settings) -> TestApp:
    settings.setdefault("prefix", "t")
    return TestApp(cached(origin, **settings), lint=False)


# -- 1. Freshness (§4.2) -------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "fresh_for"),
    [
        pytest.param([("Cache-Control", "max-age=100")], 100, id="max-age"),
        pytest.param([("Cache-Control", "max-age=100, s-maxage=200")], 200, id="s-maxage"),
        pytest.param([("Expires", "@+100")], 100, id="expires"),
        pytest.param([], 60, id="default-ttl"),
    ],
)
def test_fresh_until_its_lifetime_then_fetched_again(cached, clock, headers, fresh_for):
    headers = [(n, http_date(clock.now + 100) if v == "@+100" else v) for n, v in headers]
    origin = Origin(headers=[*headers, ("Date", http_date(clock.now))])
    app = app_for(cached, origin, default_ttl=60)
    app.get("/")
    clock.advance(fresh_for - 2)
    assert app.get("/").headers["X-Cache"] == "HIT"
    clock.advance(3)
    response = app.get("/")
    assert response.headers["X-Cache"] == "MISS"
    assert "fwd=stale" in response.headers["Cache-Status"]
    assert origin.count == 2


def test_listed_error_status_with_explicit_freshness(cached, clock):
    origin = Origin(status="404 Not Found", headers=[("Cache-Control", "max-age=30")])
    app = app_for(cached, origin, cacheable_statuses="200,404", default_ttl=0)
    app.get("/", status=404)
    assert app.get("/", status=404).headers["X-Cache"] == "HIT"


def test_redirect_with_explicit_freshness(cached, clock):
    origin = Origin(
        status="301 Moved Permanently",
        headers=[("Cache-Control", "max-age=30"), ("Location", "/elsewhere")],
    )
    app = app_for(cached, origin)
    app.get("/", status=301)
    assert app.get("/", status=301).headers["X-Cache"] == "HIT"


def test_default_ttl_zero_stores_only_explicit_freshness(cached, clock):
    origin = Origin()
    origin.responses["/explicit"] = ("200 OK", [("Cache-Control", "max-age=30")], b"x")
    app = app_for(cached, origin, default_ttl=0)
    app.get("/")
    assert app.get("/").headers["X-Cache"] == "MISS"
    app.get("/explicit")
    assert app.get("/explicit").headers["X-Cache"] == "HIT"


def test_no_cache_response_is_validated_on_every_use(cached, clock):
    origin = Origin(headers=[("Cache-Control", "no-cache"), ("ETag", '"v1"')])
    app = app_for(cached, origin)
    app.get("/")
    origin.status = "304 Not Modified"
    response = app.get("/")
    assert response.body == b"hello"
    assert response.status_int == 200
    assert "fwd=stale; fwd-status=304" in response.headers["Cache-Status"]
    assert origin.calls[-1]["HTTP_IF_NONE_MATCH"] == '"v1"'
    assert origin.count == 2


def test_must_revalidate_is_never_served_stale(cached, clock):
    origin = Origin(headers=[("Cache-Control", "max-age=10, must-revalidate")])
    app = app_for(cached, origin)
    app.get("/")
    clock.advance(20)
    response = app.get("/", headers={"Cache-Control": "max-stale=100"})
    assert response.headers["X-Cache"] == "MISS"


# -- 2. Age (§4.2.3, §5.1) -------------------------------------------------------


def test_age_grows_with_time_in_the_cache_and_date_is_kept(cached, clock):
    sent = http_date(clock.now)
    origin = Origin(headers=[("Cache-Control", "max-age=100"), ("Date", sent)])
    app = app_for(cached, origin)
    app.get("/")
    clock.advance(30)
    response = app.get("/")
    assert response.headers["Age"] == "30"
    assert response.headers["Date"] == sent


def test_age_from_the_app_counts(cached, clock):
    origin = Origin(
        headers=[("Cache-Control", "max-age=100"), ("Age", "40"), ("Date", http_date(clock.now))]
    )
    app = app_for(cached, origin)
    app.get("/")
    clock.advance(10)
    response = app.get("/")
    assert int(response.headers["Age"]) == 50
    assert response.headers.getall("Age") == ["50"]
    clock.advance(55)
    assert app.get("/").headers["X-Cache"] == "MISS"


# -- 3. Vary (§4.1) ----------------------------------------------------------------


def vary_origin() -> Origin:
    origin = Origin(headers=[("Vary", "Accept-Language"), ("Cache-Control", "max-age=100")])
    origin.body = lambda environ: environ.get("HTTP_ACCEPT_LANGUAGE", "none").encode()
    return origin


def test_each_variant_is_stored_and_served(cached, clock):
    origin = vary_origin()
    app = app_for(cached, origin)
    for language in ("en", "fr", None):
        headers = {"Accept-Language": language} if language else {}
        first = app.get("/", headers=headers)
        second = app.get("/", headers=headers)
        assert first.body == second.body == (language or "none").encode()
        assert second.headers["X-Cache"] == "HIT"
    assert origin.count == 3
    assert (
        "fwd=vary-miss" in app.get("/", headers={"Accept-Language": "de"}).headers["Cache-Status"]
    )


def test_vary_values_compare_after_whitespace_normalisation(cached, clock):
    origin = Origin(headers=[("Vary", "X-Flavours"), ("Cache-Control", "max-age=100")])
    app = app_for(cached, origin)
    app.get("/", headers={"X-Flavours": "mint, lime"})
    assert app.get("/", headers={"X-Flavours": "mint,lime"}).headers["X-Cache"] == "HIT"
    assert app.get("/", headers={"X-Flavours": "mint ,  lime"}).headers["X-Cache"] == "HIT"
    assert app.get("/", headers={"X-Flavours": "lime, mint"}).headers["X-Cache"] == "MISS"


@pytest.mark.parametrize(
    ("first", "same", "other"),
    [
        pytest.param(
            "gzip, deflate, br", ["br, gzip", "br;q=1.0, gzip;q=0.5", "*"], "gzip", id="encoding"
        ),
        pytest.param(
            "en-US, fr;q=0.5",
            ["en-us,fr;q=0.50", "fr;q=0.5, EN-us", "en-US;q=1, fr;q=0.5"],
            "fr, en-US;q=0.5",
            id="language",
        ),
    ],
)
def test_vary_values_of_known_fields_compare_by_meaning(cached, clock, first, same, other):
    """Accept-Encoding by the coding a server would pick, Accept-Language by
    tags and q-values: spellings that mean the same share a variant."""
    field = "Accept-Encoding" if "gzip" in first else "Accept-Language"
    origin = Origin(headers=[("Vary", field), ("Cache-Control", "max-age=100")])
    app = app_for(cached, origin)
    app.get("/", headers={field: first})
    for value in same:
        assert app.get("/", headers={field: value}).headers["X-Cache"] == "HIT", value
    assert app.get("/", headers={field: other}).headers["X-Cache"] == "MISS"
    assert origin.count == 2


def test_vary_names_are_case_insensitive(cached, clock):
    origin = vary_origin()
    origin.headers = [("Vary", "ACCEPT-language"), ("Cache-Control", "max-age=100")]
    app = app_for(cached, origin)
    app.get("/", headers={"accept-language": "en"})
    assert app.get("/", headers={"Accept-Language": "en"}).headers["X-Cache"] == "HIT"


def test_variants_per_url_are_capped(cached, clock, redis_client):
    origin = vary_origin()
    app = app_for(cached, origin, max_variants=3)
    for i in range(10):
        app.get("/", headers={"Accept-Language": f"lang-{i}"})
    key = primary_key("t", "http://localhost/")
    record = redis_client.hgetall(key)
    assert len(record[b"x"].split()) == 3
    # The variants live in their URL's hash: Redis evicts them all or none.
    assert len([field for field in record if field.startswith(b"v:")]) == 3
    assert redis_client.keys(key + ":*") == []
    # The newest variants survive.
    assert app.get("/", headers={"Accept-Language": "lang-9"}).headers["X-Cache"] == "HIT"
    assert app.get("/", headers={"Accept-Language": "lang-0"}).headers["X-Cache"] == "MISS"


def test_vary_star_is_never_served(cached, clock, redis_client):
    origin = Origin(headers=[("Vary", "*"), ("Cache-Control", "max-age=100")])
    app = app_for(cached, origin)
    app.get("/")
    assert app.get("/").headers["X-Cache"] == "MISS"
    assert stored_entries(redis_client) == []


def test_a_new_vary_replaces_the_old_record(cached, clock, redis_client):
    origin = vary_origin()
    app = app_for(cached, origin)
    app.get("/", headers={"Accept-Language": "en"})
    origin.headers = [("Cache-Control", "max-age=100")]
    app.get("/", headers={"Accept-Language": "fr", "Cache-Control": "no-cache"})
    assert app.get("/", headers={"Accept-Language": "en"}).body == b"fr"
    assert len(stored_entries(redis_client)) == 1


# -- 4. Request directives (§5.2.1) -------------------------------------------------


@pytest.fixture
def stored(cached, clock):
    origin = Origin(headers=[("Cache-Control", "max-age=100")])
    app = app_for(cached, origin)
    app.get("/")
    return app, origin


@pytest.mark.parametrize(
    ("request_headers", "advance", "x_cache", "fwd"),
    [
        pytest.param({"Cache-Control": "no-cache"}, 0, "MISS", "fwd=request", id="no-cache"),
        pytest.param({"Pragma": "no-cache"}, 0, "MISS", "fwd=request", id="pragma"),
        pytest.param({"Cache-Control": "max-age=0"}, 1, "MISS", "fwd=request", id="max-age-0"),
        pytest.param({"Cache-Control": "max-age=50"}, 40, "HIT", "hit", id="max-age-ok"),
        pytest.param({"Cache-Control": "min-fresh=70"}, 40, "MISS", "fwd=request", id="min-fresh"),
        pytest.param({"Cache-Control": "max-stale=50"}, 120, "STALE", "hit", id="max-stale"),
        pytest.param({"Cache-Control": "max-stale"}, 1000, "STALE", "hit", id="max-stale-any"),
        pytest.param({"Cache-Control": "no-store"}, 0, "HIT", "hit", id="no-store-may-hit"),
    ],
)
def test_request_directives(stored, clock, request_headers, advance, x_cache, fwd):
    app, origin = stored
    clock.advance(advance)
    response = app.get("/", headers=request_headers)
    assert response.headers["X-Cache"] == x_cache
    assert fwd in response.headers["Cache-Status"]
    assert origin.count == (1 if x_cache in ("HIT", "STALE") else 2)


def test_request_no_store_is_not_stored(cached, clock, redis_client):
    app = app_for(cached, Origin())
    app.get("/", headers={"Cache-Control": "no-store"})
    assert stored_entries(redis_client) == []


def test_only_if_cached(stored, clock):
    app, origin = stored
    assert app.get("/", headers={"Cache-Control": "only-if-cached"}).headers["X-Cache"] == "HIT"
    response = app.get("/other", headers={"Cache-Control": "only-if-cached"}, status=504)
    assert response.status_int == 504
    clock.advance(200)
    app.get("/", headers={"Cache-Control": "only-if-cached"}, status=504)
    assert origin.count == 1


def test_operator_can_ignore_client_no_cache(cached, clock):
    origin = Origin(headers=[("Cache-Control", "max-age=100")])
    app = app_for(cached, origin, ignore_request_no_cache=True)
    app.get("/")
    for headers in (
        {"Cache-Control": "no-cache"},
        {"Pragma": "no-cache"},
        {"Cache-Control": "max-age=0"},
    ):
        assert app.get("/", headers=headers).headers["X-Cache"] == "HIT"
    assert origin.count == 1


# -- 5. Conditional requests and revalidation (§4.3) -----------------------------------


@pytest.fixture
def validated(cached, clock):
    last_modified = http_date(clock.now - 1000)
    origin = Origin(
        headers=[
            ("Cache-Control", "max-age=100"),
            ("ETag", '"v1"'),
            ("Last-Modified", last_modified),
            ("Vary", "Accept-Encoding"),
        ]
    )
    app = app_for(cached, origin)
    app.get("/")
    return app, origin, last_modified


@pytest.mark.parametrize(
    "condition",
    [
        pytest.param({"If-None-Match": '"v1"'}, id="if-none-match"),
        pytest.param({"If-None-Match": 'W/"v1"'}, id="if-none-match-weak"),
        pytest.param({"If-Modified-Since": "@now"}, id="if-modified-since"),
    ],
)
def test_fresh_entry_answers_conditionals_with_304(validated, clock, condition):
    app, origin, _ = validated
    condition = {k: http_date(clock.now) if v == "@now" else v for k, v in condition.items()}
    response = app.get("/", headers=condition, status=304)
    assert response.body == b""
    assert response.headers["ETag"] == '"v1"'
    assert response.headers["Cache-Control"] == "max-age=100"
    assert response.headers["Vary"] == "Accept-Encoding"
    assert "Date" in response.headers and "Age" in response.headers
    assert "Content-Type" not in response.headers
    assert response.headers["X-Cache"] == "HIT"
    assert origin.count == 1


def test_non_matching_conditional_gets_the_body(validated):
    app, _, _ = validated
    response = app.get("/", headers={"If-None-Match": '"v0"'})
    assert response.status_int == 200
    assert response.body == b"hello"


def test_stale_entry_is_revalidated_and_freshened_by_304(validated, clock):
    app, origin, last_modified = validated
    clock.advance(150)
    origin.status = "304 Not Modified"
    origin.headers = [("Cache-Control", "max-age=500"), ("ETag", '"v1"'), ("X-Fresh", "yes")]
    response = app.get("/")
    assert response.status_int == 200
    assert response.body == b"hello"
    assert response.headers["X-Fresh"] == "yes"
    assert response.headers["Cache-Status"].startswith(
        "redis-wsgi-cache; fwd=stale; fwd-status=304"
    )
    assert origin.calls[-1]["HTTP_IF_NONE_MATCH"] == '"v1"'
    assert origin.calls[-1]["HTTP_IF_MODIFIED_SINCE"] == last_modified
    clock.advance(400)
    hit = app.get("/")
    assert hit.headers["X-Cache"] == "HIT"
    assert hit.headers["Cache-Control"] == "max-age=500"
    assert hit.headers["Content-Length"] == "5"
    assert origin.count == 2


def test_revalidation_with_client_conditional_gives_304(validated, clock):
    app, origin, _ = validated
    clock.advance(150)
    origin.status = "304 Not Modified"
    response = app.get("/", headers={"If-None-Match": '"v1"'}, status=304)
    assert "fwd-status=304" in response.headers["Cache-Status"]


def test_stale_entry_replaced_by_a_new_200(validated, clock):
    app, origin, _ = validated
    clock.advance(150)
    origin.body = b"new body"
    origin.headers = [("Cache-Control", "max-age=100"), ("ETag", '"v2"')]
    response = app.get("/")
    assert response.body == b"new body"
    assert "fwd=stale; fwd-status=200; stored" in response.headers["Cache-Status"]
    assert app.get("/").body == b"new body"
    assert app.get("/").headers["ETag"] == '"v2"'


def test_304_for_another_validator_does_not_freshen(validated, clock):
    app, origin, _ = validated
    clock.advance(150)
    origin.status = "304 Not Modified"
    origin.headers = [("ETag", '"other"')]
    response = app.get("/", expect_errors=True)
    assert response.headers["X-Cache"] == "MISS"
    assert origin.calls[-1].get("HTTP_IF_NONE_MATCH") is None


# -- 6. HEAD (§4.3.5) -------------------------------------------------------------


def test_head_is_answered_from_the_stored_get(stored):
    app, origin = stored
    get = app.get("/")
    head = app.head("/")
    assert head.body == b""
    assert head.headers["X-Cache"] == "HIT"
    assert head.headers["Content-Length"] == get.headers["Content-Length"] == "5"
    assert origin.count == 1


def test_head_miss_goes_to_the_app_as_head_and_is_not_stored(cached, clock, redis_client):
    origin = Origin(headers=[("Cache-Control", "max-age=100")])
    app = app_for(cached, origin)
    response = app.head("/")
    assert origin.calls[-1]["REQUEST_METHOD"] == "HEAD"
    assert "detail=method" in response.headers["Cache-Status"]
    assert stored_entries(redis_client) == []


def test_head_with_new_validators_invalidates(validated, clock):
    app, origin, _ = validated
    origin.headers = [("Cache-Control", "max-age=100"), ("ETag", '"v2"')]
    app.head("/", headers={"Cache-Control": "no-cache"})
    assert app.get("/").headers["X-Cache"] == "MISS"


# -- 7. Invalidation (§4.4) -------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_unsafe_success_invalidates_url_location_and_content_location(cached, clock, method):
    origin = Origin(headers=[("Cache-Control", "max-age=100")])
    origin.responses["/items"] = (
        "200 OK",
        [("Location", "/items/1"), ("Content-Location", "http://localhost/items/2")],
        b"done",
    )
    app = app_for(cached, origin)
    for path in ("/items", "/items/1", "/items/2", "/items/3"):
        app.get(path)
    response = app.request("/items", method=method)
    assert response.headers["X-Cache"] == "BYPASS"
    assert app.get("/items").headers["X-Cache"] == "MISS"
    assert app.get("/items/1").headers["X-Cache"] == "MISS"
    assert app.get("/items/2").headers["X-Cache"] == "MISS"
    assert app.get("/items/3").headers["X-Cache"] == "HIT"


def test_failed_unsafe_request_does_not_invalidate(cached, clock):
    origin = Origin(headers=[("Cache-Control", "max-age=100")])
    app = app_for(cached, origin)
    app.get("/")
    origin.status = "500 Internal Server Error"
    app.post("/", status=500)
    assert app.get("/").headers["X-Cache"] == "HIT"


def test_other_host_location_is_not_invalidated(cached, clock):
    origin = Origin(
        headers=[("Cache-Control", "max-age=100"), ("Location", "http://other.example/")]
    )
    app = app_for(cached, origin)
    app.get("http://other.example/")
    app.post("/")
    assert app.get("http://other.example/").headers["X-Cache"] == "HIT"


# -- 8. Never stored, never served ------------------------------------------------------


def test_authorization_with_public_response_is_stored_and_shared(cached, clock):
    origin = Origin(headers=[("Cache-Control", "public, max-age=100")])
    app = app_for(cached, origin)
    app.get("/", headers={"Authorization": "Bearer a"})
    assert app.get("/", headers={"Authorization": "Bearer b"}).headers["X-Cache"] == "HIT"
    assert app.get("/").headers["X-Cache"] == "HIT"


def test_authorization_request_is_not_served_a_non_public_entry(cached, clock):
    origin = Origin(headers=[("Cache-Control", "max-age=100")])
    app = app_for(cached, origin)
    app.get("/")
    response = app.get("/", headers={"Authorization": "Bearer a"})
    assert response.headers["X-Cache"] == "BYPASS"
    assert "fwd=bypass" in response.headers["Cache-Status"]
    assert origin.count == 2


def test_range_requests_are_forwarded_and_206_not_stored(cached, clock, redis_client):
    origin = Origin(status="206 Partial Content", headers=[("Content-Range", "bytes 0-4/10")])
    app = app_for(cached, origin)
    response = app.get("/", headers={"Range": "bytes=0-4"})
    assert response.status_int == 206
    assert "detail=range" in response.headers["Cache-Status"]
    origin.headers = [("Content-Range", "bytes 0-4/10"), ("Cache-Control", "max-age=100")]
    app.get("/")
    assert stored_entries(redis_client) == []


def test_range_of_a_stored_response_is_served_from_the_cache(cached, clock):
    origin = Origin(b"0123456789", headers=[("Cache-Control", "max-age=100"), ("ETag", '"e"')])
    app = app_for(cached, origin)
    app.get("/")
    partial = app.get("/", headers={"Range": "bytes=2-4"}, status=206)
    assert partial.body == b"234"
    assert partial.headers["Content-Range"] == "bytes 2-4/10"
    assert partial.headers["Content-Length"] == "3"
    assert partial.headers["X-Cache"] == "HIT"
    whole = app.get("/", headers={"Range": "bytes=2-4", "If-Range": '"other"'})
    assert whole.status_int == 200
    assert whole.body == b"0123456789"
    assert origin.count == 1


def test_hop_by_hop_headers_are_stripped_from_what_is_stored(cached, clock):
    origin = Origin(
        headers=[
            ("Cache-Control", "max-age=100"),
            ("Connection", "X-Hop"),
            ("X-Hop", "1"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Authenticate", "Basic"),
            ("Upgrade", "h2c"),
            ("X-End-To-End", "1"),
        ]
    )
    app = app_for(cached, origin)
    app.get("/")
    hit = app.get("/")
    assert hit.headers["X-Cache"] == "HIT"
    for name in ("Connection", "X-Hop", "Keep-Alive", "Proxy-Authenticate", "Upgrade"):
        assert name not in hit.headers
    assert hit.headers["X-End-To-End"] == "1"


# -- 9. Cache-Status (RFC 9211) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "request_headers", "expected"),
    [
        pytest.param([], {}, "redis-wsgi-cache; fwd=uri-miss; fwd-status=200; stored", id="stored"),
        pytest.param(
            [("Set-Cookie", "a=b")],
            {},
            "fwd=uri-miss; fwd-status=200; detail=set-cookie",
            id="set-cookie",
        ),
        pytest.param(
            [],
            {"Authorization": "x"},
            "fwd=bypass; fwd-status=200; detail=authorization",
            id="auth",
        ),
        pytest.param([("Cache-Control", "private")], {}, "detail=private", id="private"),
        pytest.param([("Vary", "*")], {}, "detail=vary-star", id="vary-star"),
        pytest.param([("Cache-Control", "no-store")], {}, "detail=no-store", id="no-store"),
    ],
)
def test_cache_status_of_a_miss(cached, clock, headers, request_headers, expected):
    response = app_for(cached, Origin(headers=headers)).get("/", headers=request_headers)
    assert expected in response.headers["Cache-Status"]


def test_cache_status_of_a_hit_counts_down_ttl(cached, clock):
    app = app_for(cached, Origin(headers=[("Cache-Control", "max-age=60")]))
    app.get("/")
    clock.advance(3)
    assert app.get("/").headers["Cache-Status"] == "redis-wsgi-cache; hit; ttl=57"


# -- 10. Heuristic freshness, qualified directives, odd fields ---------------------------------


@pytest.mark.parametrize(
    ("settings", "fresh_for"),
    [
        pytest.param({"default_ttl": 0}, 1000, id="a-tenth-since-last-modified"),
        pytest.param({"default_ttl": 0, "heuristic_fraction": 0.05}, 500, id="fraction"),
        pytest.param({"default_ttl": 0, "heuristic_max": 300}, 300, id="capped"),
        pytest.param({"default_ttl": 5000}, 5000, id="default-ttl-longer"),
    ],
)
def test_heuristic_freshness_from_last_modified(cached, clock, settings, fresh_for):
    """RFC 9111 §4.2.2: without explicit freshness, a Last-Modified gives a
    fraction of its age; then the stored response is revalidated with it."""
    last_modified = http_date(clock.now - 10_000)
    origin = Origin(headers=[("Last-Modified", last_modified), ("Date", http_date(clock.now))])
    app = app_for(cached, origin, **settings)
    app.get("/")
    clock.advance(fresh_for - 2)
    assert app.get("/").headers["X-Cache"] == "HIT"
    clock.advance(3)
    origin.status = "304 Not Modified"
    response = app.get("/")
    assert response.body == b"hello"
    assert "fwd=stale; fwd-status=304" in response.headers["Cache-Status"]
    assert origin.calls[-1]["HTTP_IF_MODIFIED_SINCE"] == last_modified
    assert origin.count == 2


@pytest.mark.parametrize(
    "last_modified",
    [
        pytest.param("last week", id="not-a-date"),
        pytest.param("@+100", id="after-date"),
    ],
)
def test_bad_last_modified_gives_no_heuristic(cached, clock, redis_client, last_modified):
    """A Last-Modified that is no date, or later than the response's Date, is
    passed on and gives no freshness: with default_ttl 0, nothing is stored."""
    if last_modified == "@+100":
        last_modified = http_date(clock.now + 100)
    origin = Origin(headers=[("Last-Modified", last_modified), ("Date", http_date(clock.now))])
    app = app_for(cached, origin, default_ttl=0)
    response = app.get("/")
    assert response.headers["Last-Modified"] == last_modified
    assert "detail=not-reusable" in response.headers["Cache-Status"]
    assert stored_entries(redis_client) == []


def test_heuristic_only_for_cacheable_statuses(cached, clock, redis_client):
    """An error page is stored heuristically only when the operator lists its
    status, and a status that is not heuristically cacheable never is."""
    old = http_date(clock.now - 10_000)
    origin = Origin(status="503 Service Unavailable", headers=[("Last-Modified", old)])
    origin.responses["/gone"] = ("410 Gone", [("Last-Modified", old)], b"gone")
    app = app_for(cached, origin, default_ttl=0, cacheable_statuses="200,410,503")
    app.get("/", status=503)
    assert app.get("/", status=503).headers["X-Cache"] == "MISS"
    app.get("/gone", status=410)
    assert app.get("/gone", status=410).headers["X-Cache"] == "HIT"
    unlisted = app_for(cached, origin, default_ttl=0, prefix="u")
    unlisted.get("/gone", status=410)
    assert unlisted.get("/gone", status=410).headers["X-Cache"] == "MISS"


@pytest.mark.parametrize(
    "cache_control",
    [
        pytest.param('max-age=100, no-cache="Set-Cookie, X-Private"', id="no-cache"),
        pytest.param('max-age=100, private="Set-Cookie, X-Private"', id="private"),
    ],
)
def test_qualified_directive_stores_without_the_fields(cached, clock, redis_client, cache_control):
    """RFC 9111 §5.2.2.4, §5.2.2.7: the client the response was made for gets
    every field; the stored response, and every later client, none of those
    listed: a Set-Cookie is never served from the cache."""
    origin = Origin(
        headers=[
            ("Cache-Control", cache_control),
            ("Set-Cookie", "session=alice"),
            ("X-Private", "alice"),
            ("X-Public", "1"),
        ]
    )
    app = app_for(cached, origin)
    first = app.get("/")
    assert first.headers["Set-Cookie"] == "session=alice"
    assert first.headers["X-Private"] == "alice"
    assert "stored" in first.headers["Cache-Status"]
    app.reset()  # another client, without the cookie
    hit = app.get("/")
    assert hit.headers["X-Cache"] == "HIT"
    assert "Set-Cookie" not in hit.headers
    assert "X-Private" not in hit.headers
    assert hit.headers["X-Public"] == "1"
    assert origin.count == 1
    [key] = stored_entries(redis_client)
    assert b"alice" not in b"".join(redis_client.hgetall(key).values())


def test_unlisted_set_cookie_is_still_never_stored(cached, clock, redis_client):
    origin = Origin(
        headers=[("Cache-Control", 'max-age=100, no-cache="X-Other"'), ("Set-Cookie", "s=1")]
    )
    app = app_for(cached, origin)
    assert "detail=set-cookie" in app.get("/").headers["Cache-Status"]
    assert stored_entries(redis_client) == []


def test_304_with_a_listed_set_cookie_reaches_its_client_only(cached, clock):
    """A revalidation's 304 may set a cookie: the client it answers gets it,
    the stored response does not."""
    origin = Origin(
        headers=[("Cache-Control", 'max-age=10, no-cache="Set-Cookie"'), ("ETag", '"a"')]
    )
    app = app_for(cached, origin)
    app.get("/")
    clock.advance(20)
    origin.status = "304 Not Modified"
    origin.headers = [("ETag", '"a"'), ("Set-Cookie", "session=bob")]
    revalidated = app.get("/")
    assert revalidated.headers["Set-Cookie"] == "session=bob"
    assert "fwd-status=304; stored" in revalidated.headers["Cache-Status"]
    app.reset()
    hit = app.get("/")
    assert hit.headers["X-Cache"] == "HIT"
    assert "Set-Cookie" not in hit.headers


def test_content_range_of_a_200_is_stored_with_it(cached, clock):
    """A Content-Range on a 200 has no meaning (RFC 9110 §14.4): the response is
    stored as it came; a range served from it says its own Content-Range."""
    origin = Origin(
        b"0123456789", headers=[("Cache-Control", "max-age=100"), ("Content-Range", "odd")]
    )
    app = app_for(cached, origin)
    app.get("/")
    hit = app.get("/")
    assert hit.headers["X-Cache"] == "HIT"
    assert hit.headers["Content-Range"] == "odd"
    partial = app.get("/", headers={"Range": "bytes=2-4"}, status=206)
    assert partial.headers.getall("Content-Range") == ["bytes 2-4/10"]
    assert partial.body == b"234"


def test_cdn_cache_control_names_are_case_insensitive(cached, clock):
    origin = Origin(headers=[("CDN-Cache-Control", "MaX-aGe=100"), ("Cache-Control", "no-store")])
    app = app_for(cached, origin)
    app.get("/")
    assert app.get("/").headers["X-Cache"] == "HIT"


@pytest.mark.parametrize(
    "etag",
    [
        pytest.param('W/"v1"', id="weak"),
        pytest.param('w/"v1"', id="lowercase-w"),
        pytest.param('W"v1"', id="malformed"),
    ],
)
def test_if_none_match_weak_comparison(cached, clock, etag):
    origin = Origin(headers=[("Cache-Control", "max-age=100"), ("ETag", etag)])
    app = app_for(cached, origin)
    app.get("/")
    response = app.get("/", headers={"If-None-Match": etag}, status=304)
    assert response.headers["X-Cache"] == "HIT"
    assert response.headers["ETag"] == etag


def test_validators_reach_the_app_as_the_client_sent_them(cached, clock):
    """A conditional request the cache cannot answer goes to the app with its
    validators unchanged, malformed ones included; a revalidation sends the
    stored validator as the app spelt it."""
    origin = Origin(headers=[("Cache-Control", "max-age=10"), ("ETag", "abcdef")])
    app = app_for(cached, origin)
    app.get("/first", headers={"If-None-Match": 'abcdef, w/"x"'})
    assert origin.calls[-1]["HTTP_IF_NONE_MATCH"] == 'abcdef, w/"x"'
    clock.advance(20)
    origin.status = "304 Not Modified"
    app.get("/first")
    assert origin.calls[-1]["HTTP_IF_NONE_MATCH"] == "abcdef"


def test_what_a_304_updates(cached, clock):
    """RFC 9111 §3.2: a 304 replaces the stored fields, Content-Range of a 200
    included, but not those describing the stored body."""
    origin = Origin(
        headers=[("Cache-Control", "max-age=10"), ("ETag", '"a"'), ("Content-Range", "old")]
    )
    app = app_for(cached, origin)
    app.get("/")
    clock.advance(20)
    origin.status = "304 Not Modified"
    origin.headers = [
        ("Cache-Control", "max-age=100"),
        ("ETag", '"a"'),
        ("Content-Range", "new"),
        ("Content-Encoding", "br"),
    ]
    app.get("/")
    hit = app.get("/")
    assert hit.headers["X-Cache"] == "HIT"
    assert hit.headers["Content-Range"] == "new"
    assert "Content-Encoding" not in hit.headers
    assert hit.body == b"hello"
