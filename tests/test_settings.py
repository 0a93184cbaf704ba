"""Settings: keyword > environment > config file > default, each value validated
with an error naming the setting, the value, its source and what is allowed."""

from __future__ import annotations

import pytest

from redis_wsgi_cache import CacheMiddleware, Settings, SettingsError, load_settings
from redis_wsgi_cache.settings import FIELDS


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "setup.cfg"
    path.write_text("[redis_wsgi_cache]\ndefault_ttl = 30\nprefix = fromfile\n")
    return path


def test_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={})
    assert settings == Settings()
    assert settings.default_ttl == 60
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.socket_timeout < 1
    assert settings.cacheable_statuses == frozenset({200})


def test_every_setting_has_an_environment_variable():
    values = {
        "redis_url": "redis://example:1/2",
        "prefix": "p",
        "default_ttl": "7",
        "heuristic_fraction": "0.2",
        "heuristic_max": "3600",
        "max_body_bytes": "8",
        "socket_timeout": "0.5",
        "cacheable_statuses": "200, 404",
        "keep": "9",
        "max_variants": "3",
        "ignore_request_no_cache": "true",
        "breaker_cooldown": "2",
        "lock_timeout": "1.5",
        "hit_for_miss": "4",
        "stream_wait": "0.25",
        "finish_after_disconnect": "2.5",
        "stale_while_revalidate": "5",
        "stale_if_error": "6",
        "grace": "11",
        "background_workers": "3",
        "near_cache_size": "100",
        "near_cache_bytes": "1000",
        "stats_history": "7200",
        "purge_token": "a-token-of-some-length",
        "stats_interval": "0",
        "cookie_requests": "cache",
        "ignored_cookies": "_ga*, consent",
        "key_headers": "X-Forwarded-Host, X-Tenant",
        "bypass_headers": "X-Debug",
        "ignored_query_params": "utm_*, ref",
        "sort_query": "false",
        "tag_headers": "Surrogate-Key",
        "forward_tag_headers": "true",
        "rules": "/static/* ttl=3600",
        "metrics_path": "/metrics",
        "metrics_port": "9464",
        "metrics_address": "0.0.0.0",
        "cluster": "true",
        "sentinels": "s1:26379, [::1]:26380",
        "sentinel_service": "cache",
        "sentinel_username": "watcher",
        "sentinel_password": "secret",
        "tls_ca_file": "/etc/ssl/ca.pem",
        "tls_cert_file": "/etc/ssl/client.pem",
        "tls_key_file": "/etc/ssl/client.key",
        "tls_verify": "optional",
        "compress": "gzip",
        "compress_min_bytes": "512",
    }
    assert set(values) == set(FIELDS)
    environ = {f"REDIS_WSGI_CACHE_{name.upper()}": value for name, value in values.items()}
    settings = load_settings(environ=environ)
    assert settings.redis_url == "redis://example:1/2"
    assert settings.default_ttl == 7
    assert (settings.heuristic_fraction, settings.heuristic_max) == (0.2, 3600)
    assert settings.cacheable_statuses == frozenset({200, 404})
    assert settings.ignore_request_no_cache is True
    assert settings.socket_timeout == 0.5
    assert settings.lock_timeout == 1.5
    assert (settings.stream_wait, settings.finish_after_disconnect) == (0.25, 2.5)
    assert settings.near_cache_size == 100
    assert settings.cookie_requests == "cache"
    assert settings.ignored_cookies == ("_ga*", "consent")
    assert settings.key_headers == ("x-forwarded-host", "x-tenant")
    assert settings.bypass_headers == ("x-debug",)
    assert settings.ignored_query_params == ("utm_*", "ref")
    assert settings.sort_query is False
    assert settings.tag_headers == ("surrogate-key",)
    assert settings.forward_tag_headers is True
    assert settings.rules.match("/static/a.css").ttl == 3600
    assert settings.sentinels == (("s1", 26379), ("::1", 26380))
    assert settings.cluster is True
    assert settings.compress_min_bytes == 512
    assert (settings.stats_history, settings.purge_token) == (7200, "a-token-of-some-length")
    assert (settings.metrics_port, settings.metrics_address) == (9464, "0.0.0.0")


def test_config_file_beats_default(config):
    settings = load_settings(config_file=config, environ={})
    assert settings.default_ttl == 30
    assert settings.prefix == "fromfile"


def test_environment_beats_config_file(config):
    environ = {"REDIS_WSGI_CACHE_DEFAULT_TTL": "20"}
    settings = load_settings(config_file=config, environ=environ)
    assert settings.default_ttl == 20
    assert settings.prefix == "fromfile"


def test_keyword_beats_environment(config):
    environ = {"REDIS_WSGI_CACHE_DEFAULT_TTL": "20"}
    settings = load_settings({"default_ttl": 10}, config_file=config, environ=environ)
    assert settings.default_ttl == 10


def test_config_file_named_by_environment(config):
    settings = load_settings(environ={"REDIS_WSGI_CACHE_CONFIG": str(config)})
    assert settings.default_ttl == 30


def test_setup_cfg_in_working_directory(config, monkeypatch):
    monkeypatch.chdir(config.parent)
    assert load_settings(environ={}).default_ttl == 30


def test_named_config_file_must_exist(tmp_path):
    with pytest.raises(SettingsError, match="no such file"):
        load_settings(config_file=tmp_path / "missing.cfg", environ={})


def test_unknown_setting_in_config_file(tmp_path):
    path = tmp_path / "setup.cfg"
    path.write_text("[redis_wsgi_cache]\ndefault_tll = 30\n")
    with pytest.raises(SettingsError, match="default_tll: unknown setting"):
        load_settings(config_file=path, environ={})


def test_unknown_keyword():
    with pytest.raises(TypeError, match="unknown setting 'default_tll'"):
        CacheMiddleware(lambda e, s: [], default_tll=5)


def test_error_names_setting_value_source_and_what_is_allowed():
    with pytest.raises(SettingsError) as error:
        load_settings(environ={"REDIS_WSGI_CACHE_DEFAULT_TTL": "soon"})
    assert str(error.value) == (
        "default_ttl='soon' from REDIS_WSGI_CACHE_DEFAULT_TTL:"
        " expected a whole number of seconds from 0 to 31536000"
    )


def test_the_purge_token_stays_out_of_the_settings_repr():
    settings = load_settings({"purge_token": "s3cret-purge-token-0123"}, environ={})
    assert "s3cret" not in repr(settings)


def test_bad_value_fails_at_construction():
    with pytest.raises(SettingsError, match=r"max_body_bytes=0 from keyword max_body_bytes="):
        CacheMiddleware(lambda e, s: [], max_body_bytes=0)


def test_max_body_bytes_is_at_most_what_redis_stores():
    with pytest.raises(SettingsError, match=r"from 1 to 536870912 \(512 MiB"):
        CacheMiddleware(lambda e, s: [], max_body_bytes=10**12)
    assert load_settings({"max_body_bytes": 512 * 2**20}).max_body_bytes == 536870912


def test_bad_value_in_config_file_names_the_file(tmp_path):
    path = tmp_path / "setup.cfg"
    path.write_text("[redis_wsgi_cache]\nsocket_timeout = forever\n")
    with pytest.raises(
        SettingsError, match=rf"socket_timeout='forever' from {path} \[redis_wsgi_cache\]"
    ):
        load_settings(config_file=path, environ={})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        pytest.param("default_ttl", -1, id="negative-ttl"),
        pytest.param("default_ttl", 1.5, id="fractional-ttl"),
        pytest.param("default_ttl", True, id="bool-ttl"),
        pytest.param("socket_timeout", 0, id="zero-timeout"),
        pytest.param("heuristic_fraction", 0, id="no-fraction"),
        pytest.param("heuristic_fraction", "1.5", id="fraction-over-one"),
        pytest.param("heuristic_fraction", "nan", id="fraction-nan"),
        pytest.param("heuristic_max", -1, id="negative-heuristic-max"),
        pytest.param("heuristic_max", 400 * 86400, id="heuristic-max-over-a-year"),
        pytest.param("redis_url", "localhost:6379", id="url-without-scheme"),
        pytest.param("prefix", "a{b}", id="prefix-with-braces"),
        pytest.param("prefix", "", id="empty-prefix"),
        pytest.param("cacheable_statuses", "200,abc", id="status-not-a-number"),
        pytest.param("cacheable_statuses", "206", id="partial-content"),
        pytest.param("cacheable_statuses", [99], id="status-out-of-range"),
        pytest.param("max_variants", 0, id="no-variants"),
        pytest.param("ignore_request_no_cache", "maybe", id="not-a-boolean"),
        pytest.param("keep", None, id="none"),
        pytest.param("stats_history", 60, id="history-under-an-hour"),
        pytest.param("stats_history", 8 * 86400, id="history-over-a-week"),
        pytest.param("purge_token", "short", id="token-too-short"),
        pytest.param("purge_token", "a token with spaces in it", id="token-with-spaces"),
    ],
)
def test_invalid_values(name, value):
    with pytest.raises(SettingsError, match=rf"^{name}=.* from keyword {name}=: expected "):
        load_settings({name: value}, environ={})


def test_keyword_values_of_native_types():
    settings = load_settings(
        {"cacheable_statuses": [200, 301], "ignore_request_no_cache": True, "socket_timeout": 1},
        environ={},
    )
    assert settings.cacheable_statuses == frozenset({200, 301})
    assert settings.ignore_request_no_cache is True
    assert settings.socket_timeout == 1.0


@pytest.mark.parametrize(
    "url",
    ["redis+cluster://h1:7000,h2:7001", "rediss+cluster://u:p@h1:7000", "redis://a:1,redis://b:2"],
)
def test_a_cluster_takes_several_seeds(url):
    settings = load_settings({"redis_url": url, "cluster": "+cluster" not in url}, environ={})
    assert len(settings.redis_url.split(",")) == len(url.split(","))


def test_several_seeds_without_a_cluster_are_an_error():
    with pytest.raises(SettingsError, match="several seeds are for a Redis Cluster"):
        load_settings({"redis_url": "redis://a:1,redis://b:2"}, environ={})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("redis_url", "unix:///a.sock,unix:///b.sock"),
        ("redis_url", "redis://h:abc/0"),
        ("redis_url", "redis://h:99999"),
        ("redis_url", "redis://h/x"),
        ("sentinels", "nohost"),
        ("sentinels", "h:0"),
        ("tls_verify", "maybe"),
        ("compress", "brotli"),
    ],
)
def test_topology_settings_are_checked(name, value):
    with pytest.raises(SettingsError, match=f"{name}="):
        load_settings({name: value}, environ={})


def test_a_cluster_made_from_settings_does_not_connect_until_used():
    """A cluster down when the app starts: the app starts, uncached."""
    from redis_wsgi_cache.clients import make_client

    client = make_client(load_settings({"redis_url": "redis+cluster://127.0.0.1:1"}, environ={}))
    with pytest.raises(Exception, match="cannot be connected"):
        client.ping()


def test_tls_settings_reach_the_client(tmp_path):
    """rediss:// with the TLS options: the connections the client makes carry
    them (a Sentinel's and a cluster's too)."""
    from redis_wsgi_cache.clients import make_client

    ca = tmp_path / "ca.pem"
    ca.write_text("")
    settings = load_settings(
        {
            "redis_url": "rediss://user:secret@cache.example:6380/2",
            "tls_ca_file": str(ca),
            "tls_cert_file": "/etc/ssl/client.pem",
            "tls_key_file": "/etc/ssl/client.key",
            "tls_verify": "optional",
        },
        environ={},
    )
    kwargs = make_client(settings).connection_pool.connection_kwargs
    assert kwargs["ssl_ca_certs"] == str(ca)
    assert kwargs["ssl_certfile"] == "/etc/ssl/client.pem"
    assert kwargs["ssl_keyfile"] == "/etc/ssl/client.key"
    assert kwargs["ssl_cert_reqs"] == "optional"
    assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("user", "secret", 2)
    assert kwargs["socket_timeout"] == settings.socket_timeout

    sentinel = make_client(
        load_settings(
            {
                "redis_url": "rediss://:secret@master/3",
                "sentinels": "s1:26379",
                "tls_verify": "none",
            },
            environ={},
        )
    )
    kwargs = sentinel.connection_pool.connection_kwargs
    assert kwargs["ssl_cert_reqs"] == "none"
    assert (kwargs["password"], kwargs["db"]) == ("secret", 3)
