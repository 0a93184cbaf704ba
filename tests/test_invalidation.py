"""Control what is cached: purges by URL, tag, prefix and all (hard and soft),
from the middleware, a Cache object and the command line; canonical keys and
query normalisation; per-path rules. Against the suite's Redis."""

from __future__ import annotations

import time
from contextlib import closing
from decimal import Decimal

import pytest
from conftest import cli
from webtest import TestApp
from wsgi_apps import Origin, call, stored_entries

from redis_wsgi_cache import Cache, CacheMiddleware, SettingsError, add_tags, load_settings, scripts
from redis_wsgi_cache.keys import (
    bucket_key,
    digest_of,
    index_registries,
    primary_key,
    tag_digest,
    tag_index_key,
)

TEXT = [("Content-Type", "text/plain")]


def counting_origin(**headers: str) -> Origin:
    """An origin whose body names the path, query and call number; cacheable
    for an hour, with the headers given."""
    origin = Origin(headers=[("Cache-Control", "max-age=3600"), *headers.items()])
    origin.body = lambda environ: (
        f"{environ['PATH_INFO']}?{environ.get('QUERY_STRING', '')} #{origin.count}".encode()
    )
    return origin


# -- purge by URL, any spelling -----------------------------------------------------


@pytest.mark.parametrize(
    "spelling",
    [
        "http://localhost/users/2",
        "http://LOCALHOST/users/2",
        "http://localhost:80/users/2",
        "http://localhost/users/%32",
        "HTTP://localhost/users/2?utm_source=mail&utm_medium=x",
        "http://localhost/users/2?fbclid=abc",
    ],
)
def test_any_spelling_of_a_url_purges_it(cached, redis_client, spelling):
    origin = counting_origin()
    middleware = cached(origin, prefix="t")
    app = TestApp(middleware)
    app.get("/users/2")
    app.get("/users/3")
    assert middleware.purge(spelling) == 1
    assert app.get("/users/2").headers["X-Cache"] == "MISS"
    assert app.get("/users/3").headers["X-Cache"] == "HIT"


def test_a_purge_counts_every_variant(cached, redis_client):
    origin = counting_origin(Vary="Accept-Language")
    app = TestApp(cached(origin, prefix="t"))
    for language in ("en", "fr", "de"):
        app.get("/page", headers={"Accept-Language": language})
    cache = Cache(redis_url=app.app.settings.redis_url, prefix="t")
    assert cache.purge("http://localhost/page") == 3
    assert cache.purge("http://localhost/page") == 0
    assert stored_entries(redis_client) == []


def test_a_cache_object_built_from_the_same_settings_purges_what_the_app_stored(
    redis_server, redis_client, tmp_path
):
    config = tmp_path / "setup.cfg"
    config.write_text(f"[redis_wsgi_cache]\nredis_url = {redis_server.url}\nprefix = shared\n")
    with closing(CacheMiddleware(counting_origin(), config_file=config, socket_timeout=10)) as mw:
        app = TestApp(mw)
        app.get("/a")
        assert Cache(config_file=config).purge("http://localhost/a") == 1
        assert app.get("/a").headers["X-Cache"] == "MISS"


def test_purging_a_url_reaches_entries_keyed_with_forwarding_headers(cached, redis_client):
    app = TestApp(cached(counting_origin(), prefix="t"))
    proxied = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "www.example.com"}
    app.get("/users/1", headers=proxied)
    app.get("/users/1")
    # Behind a reverse proxy an entry is stored, and purged, under the public
    # URL its forwarding headers make; the request without them is another URL.
    assert app.app.purge("https://www.example.com/users/1") == 1
    assert app.get("/users/1", headers=proxied).headers["X-Cache"] == "MISS"
    assert app.get("/users/1").headers["X-Cache"] == "HIT"
    assert app.app.purge_prefix("https://www.example.com/users/") == 1
    assert app.app.purge("http://localhost/users/1") == 1
    assert app.get("/users/1").headers["X-Cache"] == "MISS"


def test_forwarding_headers_outside_key_headers_make_no_public_url(cached, redis_client):
    """Only what the key holds may name the URL an entry is purged by."""
    app = TestApp(cached(counting_origin(), prefix="t", key_headers="x-forwarded-proto"))
    app.get("/users/1", headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"})
    assert app.app.purge("https://evil.example/users/1") == 0
    assert app.app.purge("https://localhost/users/1") == 1


def test_a_url_that_is_not_absolute_is_refused(cached, redis_client):
    middleware = cached(counting_origin())
    with pytest.raises(ValueError, match="absolute"):
        middleware.purge("/users/1")


# -- soft purge ------------------------------------------------------------------------


def test_a_soft_purge_with_stale_while_revalidate_serves_stale_and_refreshes(cached, redis_client):
    origin = counting_origin()
    origin.headers = [
        ("Content-Type", "text/plain"),
        ("Cache-Control", "max-age=3600, stale-while-revalidate=600"),
    ]
    middleware = cached(origin, prefix="t")
    app = TestApp(middleware)
    assert app.get("/news").body.endswith(b"#1")
    assert middleware.purge("http://localhost/news", soft=True) == 1
    stale = app.get("/news")
    assert stale.headers["X-Cache"] == "STALE"
    assert stale.body.endswith(b"#1")
    middleware.close()  # the background refresh is done
    assert app.get("/news").body.endswith(b"#2")


def test_a_soft_purge_revalidates_with_the_validator(cached, redis_client):
    origin = counting_origin(ETag='"v1"')
    middleware = cached(origin, prefix="t")
    app = TestApp(middleware)
    app.get("/doc")
    assert middleware.purge_tag("nothing", soft=True) == 0
    assert middleware.purge("http://localhost/doc", soft=True) == 1
    assert origin.count == 1
    response = app.get("/doc")
    assert response.headers["X-Cache"] == "MISS"
    assert origin.calls[-1].get("HTTP_IF_NONE_MATCH") == '"v1"'


def test_a_soft_purge_of_an_entry_of_no_use_stale_deletes_it(cached, redis_client):
    middleware = cached(counting_origin(), prefix="t", keep=0, grace=0)
    app = TestApp(middleware)
    app.get("/plain")
    assert middleware.purge("http://localhost/plain", soft=True) == 1
    assert stored_entries(redis_client) == []


# -- tags -------------------------------------------------------------------------------


def test_tags_from_headers_are_stored_and_not_sent(cached, redis_client):
    origin = counting_origin()
    origin.responses["/a"] = (
        "200 OK",
        [("Cache-Control", "max-age=60"), ("Surrogate-Key", "users user-1"), *TEXT],
        b"a",
    )
    origin.responses["/b"] = (
        "200 OK",
        [("Cache-Control", "max-age=60"), ("Cache-Tag", "users,user-2"), *TEXT],
        b"b",
    )
    origin.responses["/c"] = ("200 OK", [("Cache-Control", "max-age=60"), *TEXT], b"c")
    middleware = cached(origin, prefix="t")
    app = TestApp(middleware)
    for path in ("/a", "/b", "/c"):
        response = app.get(path)
        assert "Surrogate-Key" not in response.headers
        assert "Cache-Tag" not in response.headers
    assert "Surrogate-Key" not in app.get("/a").headers  # nor from the cache

    assert middleware.purge_tag("user-2") == 1
    assert app.get("/b").headers["X-Cache"] == "MISS"
    assert middleware.purge_tag("users") == 2
    assert [app.get(path).headers["X-Cache"] for path in ("/a", "/b", "/c")] == [
        "MISS",
        "MISS",
        "HIT",
    ]


def test_tag_headers_are_kept_for_a_cdn_when_asked(cached, redis_client):
    origin = Origin(headers=[("Cache-Control", "max-age=60"), ("Surrogate-Key", "k")])
    app = TestApp(cached(origin, prefix="t", forward_tag_headers=True))
    assert app.get("/").headers["Surrogate-Key"] == "k"
    assert app.get("/").headers["Surrogate-Key"] == "k"
    assert app.app.purge_tag("k") == 1


def test_an_app_can_tag_from_code(cached, redis_client):
    def tagged(environ, start_response):
        add_tags(environ, "product-7", "catalog")
        start_response("200 OK", [("Cache-Control", "max-age=60"), ("Content-Length", "2")])
        return [b"ok"]

    middleware = cached(tagged, prefix="t")
    call(middleware, "/p/7")
    assert middleware.purge_tag("product-7") == 1
    with pytest.raises(ValueError, match="not a tag"):
        add_tags({}, "two words")


# -- prefix and all ------------------------------------------------------------------


def test_purge_prefix_purges_only_under_the_prefix(cached, redis_client):
    middleware = cached(counting_origin(), prefix="t")
    app = TestApp(middleware)
    for path in ("/users/1", "/users/2", "/users", "/userships", "/teams/1"):
        app.get(path)
    assert middleware.purge_prefix("http://localhost/users/") == 2
    hits = {path: app.get(path).headers["X-Cache"] for path in ("/users", "/userships", "/teams/1")}
    assert hits == {"/users": "HIT", "/userships": "HIT", "/teams/1": "HIT"}


def test_purge_all_touches_only_this_prefix(cached, redis_client):
    mine = cached(counting_origin(), prefix="t")
    theirs = cached(counting_origin(), prefix="other")
    for middleware in (mine, theirs):
        for path in ("/a", "/b"):
            call(middleware, path)
    redis_client.set("t:not-an-entry", "1")
    assert mine.purge_all() == 2
    assert call(theirs, "/a")[1]["X-Cache"] == "HIT"
    assert call(mine, "/a")[1]["X-Cache"] == "MISS"
    assert redis_client.exists("t:not-an-entry")


def test_indexes_have_no_expiry_and_are_swept_once_their_entries_expired(cached, redis_client):
    origin = Origin(headers=[("Cache-Control", "max-age=5"), ("Surrogate-Key", "k")])
    middleware = cached(origin, prefix="t", keep=0, grace=0)
    for n in range(5):
        call(middleware, f"/old/{n}")
    index = middleware.cache.index
    index.close()  # the background sweep: this test sweeps by hand
    url_registry, tag_registry = index_registries("t")
    (bucket,) = [bucket_key("t", m.decode()) for m in redis_client.zrange(url_registry, 0, -1)]
    tag = tag_index_key("t", "k")
    assert redis_client.zcard(bucket) == redis_client.zcard(tag) == 5
    # No expiry: a Redis evicting only keys with one (volatile-*) never evicts them.
    for key in (bucket, tag, url_registry, tag_registry):
        assert redis_client.ttl(key) == -1
    assert index.sweep() == (10, 0)  # all five are still stored, under their tag too
    # A store clears the tag index of its expired members.
    redis_client.zadd(tag, dict.fromkeys(redis_client.zrange(tag, 0, -1), 1.0))
    call(middleware, "/new")
    assert redis_client.zrange(tag, 0, -1) == [digest_of(entry_key("/new"), "t").encode()]
    # Once every entry they list has expired, the sweep drops them all.
    assert index.sweep(time.time() + 3600)[1] == 2
    assert not redis_client.exists(bucket, tag, url_registry, tag_registry)


def test_the_sweep_removes_what_indexes_entries_redis_evicted(cached, redis_client):
    origin = Origin(headers=[("Cache-Control", "max-age=60"), ("Surrogate-Key", "k")])
    # A prefix of its own: no other index of the process (of a middleware not
    # yet collected) sweeps what this test sweeps by hand.
    middleware = cached(origin, prefix="swept")
    for n in range(5):
        call(middleware, f"/page/{n}")
    middleware.cache.index.close()  # the background sweep: this test sweeps by hand
    url_registry, _ = index_registries("swept")
    (bucket,) = [bucket_key("swept", m.decode()) for m in redis_client.zrange(url_registry, 0, -1)]
    # As if Redis had evicted two entries, and /page/4, first stored a second
    # earlier, were stored again since (in the same bucket: its first store's
    # member is left behind). Two stores within a millisecond share a member.
    redis_client.delete(swept_key("/page/0"), swept_key("/page/1"))
    redis_client.delete(swept_key("/page/4"))
    low = b"http://localhost/page/4\x00"
    (first,) = redis_client.zrangebylex(bucket, b"[" + low, b"[" + low + b"\xff")
    url, _, stamp = first.partition(b"\x00")
    redis_client.zrem(bucket, first)
    redis_client.zadd(bucket, {url + b"\x00" + str(Decimal(stamp.decode()) - 1).encode(): 0})
    call(middleware, "/page/4")
    assert redis_client.zcard(bucket) == 6
    checked, removed = middleware.cache.index.sweep()
    assert (checked, removed) == (6 + 5, 3 + 2)
    assert redis_client.zcard(bucket) == 3
    assert redis_client.zcard(tag_index_key("swept", "k")) == 3
    assert middleware.purge_all() == 3


def test_an_index_key_of_another_type_is_replaced(cached, redis_client):
    """What holds an index's name but is no sorted set was never ours: the next
    store replaces it, and purges find what that store listed."""
    origin = Origin(headers=[("Cache-Control", "max-age=60"), ("Surrogate-Key", "k")])
    middleware = cached(origin, prefix="other")
    call(middleware, "/a")
    url_registry, tag_registry = index_registries("other")
    (bucket,) = [bucket_key("other", m.decode()) for m in redis_client.zrange(url_registry, 0, -1)]
    for key in (bucket, url_registry, tag_registry, tag_index_key("other", "k")):
        redis_client.set(key, "not an index")
    call(middleware, "/b")
    assert redis_client.zcard(bucket) == redis_client.zcard(tag_index_key("other", "k")) == 1
    assert middleware.purge_tag("k") == 1
    assert middleware.purge_prefix("http://localhost/") == 0
    assert call(middleware, "/b")[1]["X-Cache"] == "MISS"


def test_the_sweep_keeps_a_tag_index_stored_to_meanwhile(cached, redis_client):
    origin = Origin(headers=[("Cache-Control", "max-age=60"), ("Surrogate-Key", "k")])
    middleware = cached(origin, prefix="t", keep=0, grace=0)
    call(middleware, "/a")
    _, tag_registry = index_registries("t")
    # The sweep read the registry as if the tag had expired; a store since
    # registered a later expiry.
    redis_client.zadd(tag_registry, {tag_digest("k"): 1.0})
    index = middleware.cache.index
    due = redis_client.zrangebyscore(tag_registry, "-inf", 2.0)
    call(middleware, "/b")
    redis_client.eval(scripts.UNREGISTER, 1, tag_registry, "2.0", *due)
    assert redis_client.zscore(tag_registry, tag_digest("k")) > time.time()
    assert index.purge_tag("k") == 2


def entry_key(path: str) -> str:
    return primary_key("t", f"http://localhost{path}")


def swept_key(path: str) -> str:
    return primary_key("swept", f"http://localhost{path}")


# -- query normalisation -------------------------------------------------------------------


def test_ignored_query_params_are_out_of_the_key_and_the_app(cached, redis_client):
    origin = counting_origin()
    app = TestApp(cached(origin, prefix="t"))
    first = app.get("/users/3?utm_source=a&id=1")
    assert first.body.startswith(b"/users/3?id=1 ")  # the app never saw utm_source
    for query in ("utm_source=b&id=1", "id=1&utm_medium=c", "gclid=x&id=1&fbclid=y", "id=%31"):
        response = app.get(f"/users/3?{query}")
        assert response.headers["X-Cache"] == "HIT", query
    assert origin.count == 1


def test_query_order_is_canonical_for_the_key_only(cached, redis_client):
    origin = counting_origin()
    app = TestApp(cached(origin, prefix="t"))
    assert app.get("/s?b=2&a=1").body.startswith(b"/s?b=2&a=1 ")
    assert app.get("/s?a=1&b=2").headers["X-Cache"] == "HIT"
    # Values of one name keep their order: an app can see it.
    app.get("/s?a=1&a=2")
    assert app.get("/s?a=2&a=1").headers["X-Cache"] == "MISS"


def test_sort_query_off_and_semicolons(cached, redis_client):
    origin = counting_origin()
    app = TestApp(cached(origin, prefix="t", sort_query=False, ignored_query_params=""))
    app.get("/s?b=2&a=1")
    assert app.get("/s?a=1&b=2").headers["X-Cache"] == "MISS"
    assert app.get("/s?utm_source=x").body.startswith(b"/s?utm_source=x ")
    # ";" separates nothing, as werkzeug parses it.
    app.get("/s?a=1;b=2")
    assert app.get("/s?a=1&b=2").headers["X-Cache"] == "HIT"
    assert app.get("/s?b=2;a=1").headers["X-Cache"] == "MISS"


# -- per-path rules ----------------------------------------------------------------------


def test_rules_set_ttl_bypass_tags_and_windows(cached, redis_client):
    origin = Origin()  # no freshness information: the rule's ttl applies
    rules = """
        /static/*  ttl=86400 tags=static,assets
        /admin/*   bypass
        ^/users/[0-9]+$  ttl=30 stale_while_revalidate=10
    """
    middleware = cached(origin, prefix="t", rules=rules, grace=0)
    app = TestApp(middleware)
    css = app.get("/static/site.css")
    assert 'rule="/static/*"' in css.headers["Cache-Status"]
    assert 86000 < redis_client.ttl(stored_entries(redis_client)[0]) <= 86400
    assert middleware.purge_tag("assets") == 1

    admin = app.get("/admin/users")
    assert admin.headers["X-Cache"] == "BYPASS"
    assert "detail=rule" in admin.headers["Cache-Status"]
    assert app.get("/admin/users").headers["X-Cache"] == "BYPASS"

    user = app.get("/users/7")
    assert 'rule="^/users/[0-9]+$"' in user.headers["Cache-Status"]
    (key,) = [key for key in stored_entries(redis_client) if key]
    assert 30 < redis_client.ttl(key) <= 40  # ttl 30 + the window of 10
    plain = app.get("/users/7/edit")
    assert "rule=" not in plain.headers["Cache-Status"]


def test_a_rule_sets_the_longest_heuristic_freshness(cached, redis_client):
    """A rule's ttl is the least a response without explicit freshness gets; an
    old Last-Modified lengthens it, up to the rule's heuristic_max."""
    origin = Origin(headers=[("Last-Modified", "Thu, 01 Jan 2015 00:00:00 GMT")])
    rules = ["/exact/* ttl=30 heuristic_max=0", "/capped/* ttl=30 heuristic_max=600"]
    middleware = cached(origin, prefix="t", rules=rules, grace=0, keep=0)
    app = TestApp(middleware)
    app.get("/exact/a")
    (exact,) = stored_entries(redis_client)
    assert 20 < redis_client.ttl(exact) <= 30
    app.get("/capped/a")
    (capped,) = set(stored_entries(redis_client)) - {exact}
    assert 590 < redis_client.ttl(capped) <= 600
    app.get("/other")
    (other,) = set(stored_entries(redis_client)) - {exact, capped}
    assert 86000 < redis_client.ttl(other) <= 86400


def test_the_first_matching_rule_wins(cached, redis_client):
    middleware = cached(Origin(), prefix="t", rules=["/a/* bypass", "/a/b ttl=5"])
    assert call(middleware, "/a/b")[1]["X-Cache"] == "BYPASS"


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        pytest.param("/a ttl=soon", "rule 1 ('/a ttl=soon'): ttl", id="bad-number"),
        pytest.param("/a\n/b colour=red", "rule 1 ('/a'): says nothing", id="empty"),
        pytest.param("/ok ttl=1\n/b colour=red", "rule 2 ('/b colour=red')", id="unknown"),
        pytest.param("^(open ttl=1", "bad pattern", id="bad-regex"),
    ],
)
def test_a_malformed_rule_is_an_error_naming_it(rules, message):
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings({"rules": rules}, environ={})


# -- the command line, as a subprocess --------------------------------------------------------


@pytest.fixture
def filled(cached, redis_server, redis_client):
    origin = Origin(headers=[("Cache-Control", "max-age=600"), ("Surrogate-Key", "team")])
    middleware = cached(origin, prefix="t")
    for path in ("/users/1", "/users/2?utm_source=x", "/teams/1"):
        call(middleware, path)
    return redis_server.url, middleware


def test_cli_purges_a_url_in_any_spelling(filled):
    url, middleware = filled
    done = cli("purge", "http://LOCALHOST:80/users/%31", "--key-prefix", "t", redis_url=url)
    assert (done.returncode, done.stdout) == (
        0,
        "purged 1 response for http://LOCALHOST:80/users/%31\n",
    )
    assert call(middleware, "/users/1")[1]["X-Cache"] == "MISS"


def test_cli_purges_a_tag_a_prefix_and_all(filled):
    url, _middleware = filled
    done = cli(
        "--key-prefix", "t", "purge", "--prefix", "http://localhost/users/", "--soft", redis_url=url
    )
    assert done.stdout == "marked stale 2 responses for URLs under http://localhost/users/\n"
    # Marked stale, those two are kept for the grace time: a hard purge finds them.
    done = cli("--key-prefix=t", "purge", "--tag", "team", "--tag", "nobody", redis_url=url)
    assert done.stdout.splitlines() == [
        "purged 3 responses for tag team",
        "purged 0 responses for tag nobody",
    ]
    assert done.returncode == 0
    call(filled[1], "/teams/1")
    done = cli("purge", "--all", "--key-prefix", "t", redis_url=url)
    assert (done.returncode, done.stdout) == (0, "purged 1 response for everything under t:\n")


def test_cli_exits_1_when_nothing_matched_and_2_on_usage_errors(filled):
    url, _ = filled
    nothing = cli("--key-prefix", "t", "purge", "http://localhost/never", redis_url=url)
    assert (nothing.returncode, nothing.stdout) == (
        1,
        "purged 0 responses for http://localhost/never\n",
    )
    for args in (["purge"], ["purge", "--all", "--tag", "x"], ["purge", "/relative"]):
        usage = cli("--key-prefix", "t", *args, redis_url=url)
        assert usage.returncode == 2, args
        assert usage.stderr.startswith("redis-wsgi-cache: "), usage.stderr
        assert "Traceback" not in usage.stderr
    bad = cli("purge", "--all", "--set", "default_ttl=soon", redis_url=url)
    assert bad.returncode == 2
    assert "default_ttl='soon'" in bad.stderr


# -- tag headers are for the cache --------------------------------------------------


def tagged_app(environ, start_response):
    """Answers every method, tagged for the cache, conditionally when asked."""
    headers = [
        ("Content-Type", "text/plain"),
        ("Cache-Control", "max-age=60"),
        ("ETag", '"v1"'),
        ("Surrogate-Key", "tenant-acme user-4242"),
        ("Cache-Tag", "tenant-acme"),
    ]
    if environ.get("HTTP_IF_NONE_MATCH") == '"v1"':
        start_response("304 Not Modified", headers)
        return []
    start_response("200 OK", [*headers, ("Content-Length", "4")])
    return [b"page"]


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        pytest.param("GET", {}, id="miss"),
        pytest.param("GET", {"Cookie": "session=1"}, id="cookie-bypass"),
        pytest.param("GET", {"X-HTTP-Method-Override": "GET"}, id="override-bypass"),
        pytest.param("GET", {"X-HTTP-Method-Override": "DELETE"}, id="override-unsafe"),
        pytest.param("GET", {"Content-Length": "2"}, id="request-body"),
        pytest.param("GET", {"Cache-Control": "no-cache"}, id="no-cache"),
        pytest.param("GET", {"Cache-Control": "no-store"}, id="no-store"),
        pytest.param("GET", {"Pragma": "no-cache"}, id="pragma"),
        pytest.param("GET", {"Authorization": "Basic eDp5"}, id="authorization"),
        pytest.param("GET", {"If-None-Match": '"v1"'}, id="conditional"),
        pytest.param("GET", {"Range": "bytes=0-1"}, id="range"),
        pytest.param("HEAD", {}, id="head"),
        pytest.param("POST", {}, id="post"),
        pytest.param("DELETE", {}, id="delete"),
        pytest.param("OPTIONS", {}, id="options"),
    ],
)
def test_tag_headers_never_reach_clients_unasked(cached, redis_client, method, headers):
    app = TestApp(cached(tagged_app, prefix="t"))
    body = b"{}" if headers.pop("Content-Length", None) else b""
    for _ in range(2):  # a miss, then what the cache makes of it
        response = app.request("/page", method=method, headers=headers, body=body)
        assert response.status_int in (200, 206, 304), response.status
        sent = {name.lower() for name in response.headers}
        assert not sent & {"surrogate-key", "cache-tag"}, (method, headers, response.headers)


def test_a_revalidated_entry_keeps_its_tags_away_from_clients(cached, redis_client, clock):
    app = TestApp(cached(tagged_app, prefix="t"))
    app.get("/page")
    clock.advance(120)  # stale: the next request revalidates, and the app says 304
    response = app.get("/page")
    assert response.body == b"page"
    assert not {name.lower() for name in response.headers} & {"surrogate-key", "cache-tag"}
    assert app.app.purge_tag("user-4242") == 1


def test_forward_tag_headers_keeps_them_on_every_path(cached, redis_client):
    app = TestApp(cached(tagged_app, prefix="t", forward_tag_headers=True))
    for headers in ({}, {}, {"Cookie": "session=1"}, {"Cache-Control": "no-cache"}):
        response = app.get("/page", headers=headers)
        assert response.headers["Surrogate-Key"] == "tenant-acme user-4242"
    assert app.post("/page").headers["Cache-Tag"] == "tenant-acme"
