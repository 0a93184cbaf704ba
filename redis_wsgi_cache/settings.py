"""The cache's settings: one frozen value, loaded from keyword arguments, the
environment and a setup.cfg section, each value validated where it is read.

A setting has one name everywhere: keyword ``default_ttl``, environment
``REDIS_WSGI_CACHE_DEFAULT_TTL``, setup.cfg ``[redis_wsgi_cache] default_ttl``.
Precedence: keyword > environment > config file > default.
"""

from __future__ import annotations

import configparser
import dataclasses
import os
import re
import typing as t
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

from .rules import MAX_SECONDS, Rules, parse_rules

ENV_PREFIX = "REDIS_WSGI_CACHE_"
CONFIG_ENV = "REDIS_WSGI_CACHE_CONFIG"
# Names under ENV_PREFIX that are not settings: the config file, and the
# redis-server binary the test suite runs against.
RESERVED_ENV = frozenset({CONFIG_ENV, "REDIS_WSGI_CACHE_TEST_SERVER"})
CONFIG_SECTION = "redis_wsgi_cache"
DEFAULT_CONFIG_FILE = "setup.cfg"
# RFC 9110 §5.6.2.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class SettingsError(ValueError):
    """A setting has a value that is not allowed; the message names the setting,
    the value, where it came from and what is allowed."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """Every knob of the cache. The docs' Settings page says what each means."""

    redis_url: str = "redis://localhost:6379/0"
    prefix: str = "rwc"
    default_ttl: int = 60
    heuristic_fraction: float = 0.1
    heuristic_max: int = 86400
    max_body_bytes: int = 1024 * 1024
    socket_timeout: float = 0.25
    cacheable_statuses: frozenset[int] = frozenset({200})
    keep: int = 300
    max_variants: int = 32
    ignore_request_no_cache: bool = False
    breaker_cooldown: float = 5.0
    lock_timeout: float = 10.0
    hit_for_miss: int = 30
    stream_wait: float = 1.0
    finish_after_disconnect: float = 5.0
    stale_while_revalidate: int = 0
    stale_if_error: int = 0
    grace: int = 10
    background_workers: int = 2
    near_cache_size: int = 0
    near_cache_bytes: int = 64 * 1024 * 1024
    stats_interval: float = 1.0
    stats_history: int = 86400
    # Kept out of repr(), and so out of logs and tracebacks.
    purge_token: str = dataclasses.field(default="", repr=False)
    cookie_requests: str = "pass"
    ignored_cookies: tuple[str, ...] = ("_ga*", "_gid", "_gcl_*", "_fbp", "_fbc", "__utm*")
    key_headers: tuple[str, ...] = (
        "forwarded",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-forwarded-proto",
        "x-original-url",
        "x-rewrite-url",
    )
    bypass_headers: tuple[str, ...] = (
        "x-http-method",
        "x-http-method-override",
        "x-method-override",
    )
    ignored_query_params: tuple[str, ...] = (
        "utm_*",
        "fbclid",
        "gclid",
        "dclid",
        "msclkid",
        "mc_cid",
        "mc_eid",
        "_ga",
    )
    sort_query: bool = True
    tag_headers: tuple[str, ...] = ("surrogate-key", "cache-tag")
    forward_tag_headers: bool = False
    rules: Rules = dataclasses.field(default_factory=Rules)
    metrics_path: str = ""
    metrics_port: int = 0
    metrics_address: str = "127.0.0.1"
    cluster: bool = False
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_service: str = "mymaster"
    sentinel_username: str = ""
    sentinel_password: str = dataclasses.field(default="", repr=False)
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_verify: str = "required"
    compress: str = "off"
    compress_min_bytes: int = 1024


def _non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError
    return number


def _duration(value: str) -> int:
    number = int(value)
    if not 0 <= number <= MAX_SECONDS:
        raise ValueError
    return number


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError
    return number


# The largest body stored: the largest value a Redis stores by default
# (proto-max-bulk-len), and what one request may hold in memory while it is read.
MAX_BODY_BYTES = 512 * 1024 * 1024


def _body_bytes(value: str) -> int:
    number = _positive_int(value)
    if number > MAX_BODY_BYTES:
        raise ValueError
    return number


def _positive_seconds(value: str) -> float:
    number = float(value)
    if not 0 < number < 3600:
        raise ValueError
    return number


def _non_negative_seconds(value: str) -> float:
    number = float(value)
    if not 0 <= number < 86400:
        raise ValueError
    return number


# The fewest characters of a purge token: a guess must not be practical.
MIN_TOKEN_LENGTH = 16


def _token(value: str) -> str:
    if value and (len(value) < MIN_TOKEN_LENGTH or not re.fullmatch(r"[\x21-\x7e]+", value)):
        raise ValueError
    return value


def _history(value: str) -> int:
    number = int(value)
    if number != 0 and not 3600 <= number <= 7 * 86400:
        raise ValueError
    return number


def _fraction(value: str) -> float:
    number = float(value)
    if not 0 < number <= 1:  # also refuses nan
        raise ValueError
    return number


def _redis_url(value: str) -> str:
    urls = [url.strip() for url in value.split(",")]
    # Seeds after the first may be host:port, with the first one's scheme.
    scheme = urlsplit(urls[0]).scheme
    urls = [urls[0], *(url if "://" in url else f"{scheme}://{url}" for url in urls[1:])]
    schemes = {urlsplit(url).scheme for url in urls}
    if len(urls) > 1 and not schemes <= {"redis", "rediss", "redis+cluster", "rediss+cluster"}:
        raise ValueError  # several seeds make sense for a cluster only
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster"):
            raise ValueError
        if parts.scheme == "unix":
            if not parts.path:
                raise ValueError
            continue
        if not parts.hostname:
            raise ValueError
        parts.port  # noqa: B018 (raises ValueError for a port that is not 0-65535)
        database = parts.path.strip("/")
        if database and not (database.isdigit() and database.isascii()):
            raise ValueError
    return ",".join(urls)


def _host_ports(value: str) -> tuple[tuple[str, int], ...]:
    found = []
    for item in _names(value):
        host, colon, port = item.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError
        found.append((host.strip("[]"), int(port)))
    return tuple(found)


def _port(value: str) -> int:
    number = int(value)
    if not 0 <= number < 65536:
        raise ValueError
    return number


def _text(value: str) -> str:
    if any(c in value for c in "\r\n\x00"):
        raise ValueError
    return value


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        lowered = value.strip().lower()
        if lowered not in choices:
            raise ValueError
        return lowered

    return parse


def _prefix(value: str) -> str:
    # Braces would break the hash tags; glob characters would make a pattern of
    # the prefix match other prefixes' keys.
    if not value or any(c in value for c in "{}*?[]\\ \t\r\n"):
        raise ValueError
    return value


def _names(value: str) -> tuple[str, ...]:
    return tuple(part for part in value.replace(",", " ").split() if part)


def _header_names(value: str) -> tuple[str, ...]:
    names = tuple(name.lower() for name in _names(value))
    if not all(_TOKEN.fullmatch(name) for name in names):
        raise ValueError
    return names


def _cookie_globs(value: str) -> tuple[str, ...]:
    globs = _names(value)
    if not all(_TOKEN.fullmatch(glob.replace("*", "x").replace("?", "x")) for glob in globs):
        raise ValueError
    return globs


def _query_globs(value: str) -> tuple[str, ...]:
    globs = _names(value)
    if any("&" in glob or "=" in glob for glob in globs):
        raise ValueError
    return globs


def _path(value: str) -> str:
    if value and (not value.startswith("/") or any(c in value for c in " ?#\t\r\n")):
        raise ValueError
    return value


def _statuses(value: str) -> frozenset[int]:
    statuses = frozenset(int(part) for part in value.replace(",", " ").split())
    if not statuses or any(not 200 <= s <= 599 or s in (206, 304) for s in statuses):
        raise ValueError
    return statuses


def _boolean(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError


# Parsers shared by several settings, with what they allow, in words.
_DURATION = (_duration, f"a whole number of seconds from 0 to {MAX_SECONDS}")
_BOOLEAN = (_boolean, "true or false")
_HEADER_NAMES = (_header_names, "header names, separated by commas")

# For each setting: the parser of its text form and what is allowed, in words.
_PARSERS: dict[str, tuple[Callable[[str], t.Any], str]] = {
    "redis_url": (
        _redis_url,
        "a redis://[user:password@]host[:port][/db], rediss://… or unix:///path URL,"
        " port 0-65535; for a cluster, seeds separated by commas",
    ),
    "prefix": (
        _prefix,
        "a non-empty string without braces, glob characters (*?[]\\) or whitespace",
    ),
    "default_ttl": _DURATION,
    "heuristic_fraction": (_fraction, "a number > 0 and <= 1 (0.1: a tenth)"),
    "heuristic_max": _DURATION,
    "max_body_bytes": (
        _body_bytes,
        f"a whole number of bytes from 1 to {MAX_BODY_BYTES} (512 MiB, the largest value a"
        " Redis stores by default)",
    ),
    "socket_timeout": (_positive_seconds, "a number of seconds > 0 and < 3600"),
    "cacheable_statuses": (
        _statuses,
        "status codes from 200 to 599 (not 206 or 304), separated by commas",
    ),
    "keep": _DURATION,
    "max_variants": (_positive_int, "a whole number >= 1"),
    "ignore_request_no_cache": _BOOLEAN,
    "breaker_cooldown": (_non_negative_seconds, "a number of seconds >= 0 and < 86400"),
    "lock_timeout": (_positive_seconds, "a number of seconds > 0 and < 3600"),
    "hit_for_miss": _DURATION,
    "stream_wait": (_non_negative_seconds, "a number of seconds >= 0 and < 86400"),
    "finish_after_disconnect": (
        _non_negative_seconds,
        "a number of seconds >= 0 and < 86400",
    ),
    "stale_while_revalidate": _DURATION,
    "stale_if_error": _DURATION,
    "grace": _DURATION,
    "background_workers": (_positive_int, "a whole number >= 1"),
    "near_cache_size": (_non_negative_int, "a whole number of entries >= 0 (0 turns it off)"),
    "near_cache_bytes": (_positive_int, "a whole number of bytes >= 1"),
    "stats_interval": (_non_negative_seconds, "a number of seconds >= 0 and < 86400"),
    "stats_history": (
        _history,
        "a whole number of seconds from 3600 to 604800 (a week), or 0 (no history)",
    ),
    "purge_token": (
        _token,
        f"at least {MIN_TOKEN_LENGTH} printable ASCII characters without spaces, or nothing",
    ),
    "cookie_requests": (_choice("pass", "cache"), "pass or cache"),
    "ignored_cookies": (_cookie_globs, "cookie names or globs, separated by commas"),
    "key_headers": _HEADER_NAMES,
    "bypass_headers": _HEADER_NAMES,
    "ignored_query_params": (
        _query_globs,
        "query parameter names or globs, separated by commas",
    ),
    "sort_query": _BOOLEAN,
    "tag_headers": _HEADER_NAMES,
    "forward_tag_headers": _BOOLEAN,
    "rules": (parse_rules, "rules as the docs' Per-path rules page describes them"),
    "metrics_path": (_path, "a path starting with / (empty: no metrics endpoint)"),
    "metrics_port": (_port, "a port number from 1 to 65535 (0: no metrics server)"),
    "metrics_address": (_text, "the address the metrics server listens on"),
    "cluster": _BOOLEAN,
    "sentinels": (_host_ports, "host:port of each sentinel, separated by commas"),
    "sentinel_service": (_text, "the name the sentinels know the master by"),
    "sentinel_username": (_text, "a user name, or nothing"),
    "sentinel_password": (_text, "a password, or nothing"),
    "tls_ca_file": (_text, "the path of a PEM file of CA certificates, or nothing"),
    "tls_cert_file": (_text, "the path of a PEM client certificate, or nothing"),
    "tls_key_file": (_text, "the path of the client certificate's PEM key, or nothing"),
    "tls_verify": (_choice("required", "optional", "none"), "required, optional or none"),
    "compress": (_choice("off", "gzip", "zstd"), "off, gzip or zstd"),
    "compress_min_bytes": (_positive_int, "a whole number of bytes >= 1"),
}
# Settings whose value is a list (given in code as a list, tuple or set).
_LISTS = frozenset(
    {
        "cacheable_statuses",
        "ignored_cookies",
        "key_headers",
        "bypass_headers",
        "ignored_query_params",
        "tag_headers",
        "sentinels",
    }
)
# Settings that take true or false.
_BOOLEANS = frozenset(name for name, parsing in _PARSERS.items() if parsing is _BOOLEAN)

FIELDS = tuple(field.name for field in dataclasses.fields(Settings))
_KNOWN = f"known settings are {', '.join(FIELDS)}"


def validate(name: str, value: t.Any, source: str) -> t.Any:
    """The value of setting ``name`` given as ``value`` (text, or a value of the
    setting's own type) by ``source``; :class:`SettingsError` naming the three
    and what is allowed, for a value that is not. For places that hold settings
    of their own (a Flask app's config, Django's settings, a Paste .ini)."""
    if name not in _PARSERS:
        raise SettingsError(f"{source}: unknown setting; {_KNOWN}")
    return _validate(name, value, source)


def _validate(name: str, value: t.Any, source: str) -> t.Any:
    parser, allowed = _PARSERS[name]
    if name == "rules":
        if isinstance(value, Rules):
            return value
        try:
            return parse_rules(value)
        except (ValueError, TypeError) as error:
            raise SettingsError(f"rules from {source}: {error}") from None
    if isinstance(value, str):
        text = value
    elif isinstance(value, bool) and name not in _BOOLEANS:
        raise SettingsError(f"{name}={value!r} from {source}: expected {allowed}")
    elif isinstance(value, (int, float, bool)):
        text = str(value).lower() if isinstance(value, bool) else str(value)
    elif name in _LISTS and isinstance(value, (list, tuple, set, frozenset)):
        text = ",".join(
            f"{v[0]}:{v[1]}" if isinstance(v, tuple) and len(v) == 2 else str(v) for v in value
        )
    else:
        raise SettingsError(f"{name}={value!r} from {source}: expected {allowed}")
    if name == "default_ttl" and isinstance(value, float) and not value.is_integer():
        raise SettingsError(f"{name}={value!r} from {source}: expected {allowed}")
    try:
        return parser(text.strip() if name != "prefix" else text)
    except (ValueError, OverflowError):
        raise SettingsError(f"{name}={value!r} from {source}: expected {allowed}") from None


def _read_config_file(path: str, required: bool, source: str) -> Mapping[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as file:
            parser.read_file(file)
    except FileNotFoundError:
        if required:
            raise SettingsError(f"config file {path!r} from {source}: no such file") from None
        return {}
    except (OSError, UnicodeDecodeError, configparser.Error) as error:
        raise SettingsError(f"config file {path!r} from {source}: {error}") from None
    if not parser.has_section(CONFIG_SECTION):
        return {}
    section = dict(parser.items(CONFIG_SECTION))
    unknown = sorted(set(section) - set(FIELDS))
    if unknown:
        raise SettingsError(f"{path} [{CONFIG_SECTION}] {unknown[0]}: unknown setting; {_KNOWN}")
    return section


def load_settings(
    overrides: Mapping[str, t.Any] | None = None,
    *,
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build :class:`Settings` from keyword overrides, the environment, the config
    file and the defaults, in that order of precedence.

    The config file is ``config_file`` if given, else the file named by
    ``REDIS_WSGI_CACHE_CONFIG``, else ``setup.cfg`` in the working directory if it
    exists. A named file that does not exist is an error.
    """
    overrides = dict(overrides or {})
    environ = os.environ if environ is None else environ
    unknown = sorted(set(overrides) - set(FIELDS))
    if unknown:
        raise TypeError(f"unknown setting {unknown[0]!r}; {_KNOWN}")
    unknown = sorted(
        name
        for name in environ
        if name.startswith(ENV_PREFIX)
        and name not in RESERVED_ENV
        and name.removeprefix(ENV_PREFIX).lower() not in FIELDS
    )
    if unknown:
        raise SettingsError(
            f"{unknown[0]}: unknown setting in the environment; {_KNOWN} (as {ENV_PREFIX}<NAME>)"
        )

    if config_file is not None:
        path, required, file_source = os.fspath(config_file), True, "config_file="
    elif environ.get(CONFIG_ENV):
        path, required, file_source = environ[CONFIG_ENV], True, CONFIG_ENV
    else:
        path, required, file_source = DEFAULT_CONFIG_FILE, False, "the working directory"
    from_file = _read_config_file(path, required, file_source)

    values: dict[str, t.Any] = {}
    sources: dict[str, str] = {}
    for name in FIELDS:
        env_name = ENV_PREFIX + name.upper()
        if name in overrides:
            sources[name] = f"keyword {name}="
            values[name] = _validate(name, overrides[name], sources[name])
        elif env_name in environ:
            sources[name] = env_name
            values[name] = _validate(name, environ[env_name], env_name)
        elif name in from_file:
            sources[name] = f"{path} [{CONFIG_SECTION}]"
            values[name] = _validate(name, from_file[name], sources[name])
    settings = Settings(**values)
    seeds = settings.redis_url.split(",")
    if len(seeds) > 1 and not settings.cluster and "+cluster://" not in seeds[0]:
        raise SettingsError(
            f"redis_url={settings.redis_url!r} from {sources.get('redis_url', 'the default')}:"
            " several seeds are for a Redis Cluster: set cluster = true, or use"
            " redis+cluster://"
        )
    return settings
