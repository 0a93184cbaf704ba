"""The only module that talks to Redis: lookup, save and purge of stored
responses, each one round trip, behind a circuit breaker that fails open."""

from __future__ import annotations

import dataclasses
import logging
import time
import typing as t
from collections.abc import Callable, Mapping

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .entry import CachedResponse
from .keys import primary_key

if t.TYPE_CHECKING:
    from .settings import Settings

logger = logging.getLogger("redis_wsgi_cache")

T = t.TypeVar("T")

# KEYS[1]: primary key. ARGV: the request's header names and values, in pairs.
# A plain entry is returned as it is; a Vary record ("vr" holds the header
# names) selects the variant whose secondary key keys.variant_id computes.
LOOKUP = """
local fields = redis.pcall('HGETALL', KEYS[1])
if fields.err or #fields == 0 then return {'miss'} end
local names = nil
for i = 1, #fields, 2 do
  if fields[i] == 'vr' then names = fields[i + 1] break end
end
if names == nil then return {'entry', fields} end
local request = {}
for i = 1, #ARGV, 2 do request[ARGV[i]] = ARGV[i + 1] end
local parts = {}
for name in string.gmatch(names, '[^,]+') do
  local value = request[name]
  if value == nil then parts[#parts + 1] = name else parts[#parts + 1] = name .. '=' .. value end
end
local variant = redis.pcall('HGETALL', KEYS[1] .. ':' .. redis.sha1hex(table.concat(parts, '\\n')))
if variant.err or #variant == 0 then return {'vary-miss'} end
return {'entry', variant}
"""

# Deletes what a primary key holds: the entry or Vary record and its variants.
_DROP = """
local function drop(key)
  if redis.call('TYPE', key)['ok'] == 'hash' and redis.call('HEXISTS', key, 'vr') == 1 then
    for _, field in ipairs(redis.call('HKEYS', key)) do
      if string.sub(field, 1, 2) == 'x:' then
        redis.call('DEL', key .. ':' .. string.sub(field, 3))
      end
    end
  end
  return redis.call('DEL', key)
end
"""

PURGE = _DROP + "return drop(KEYS[1])"

# KEYS[1]: primary key. ARGV: ttl, Vary names ('' for none), variant id, the
# most variants to keep, the time now, then the entry's fields and values.
# Keeps the Vary record's list of live variants ('x:<id>' = expiry time) and
# evicts the variant that expires first once there are too many.
SAVE = (
    _DROP
    + """
local ttl = tonumber(ARGV[1])
local names = ARGV[2]
local fields = {}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
if names == '' then
  drop(KEYS[1])
  redis.call('HSET', KEYS[1], unpack(fields))
  redis.call('EXPIRE', KEYS[1], ttl)
  return 1
end
if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash' or redis.call('HGET', KEYS[1], 'vr') ~= names then
  drop(KEYS[1])
  redis.call('HSET', KEYS[1], 'v', '1', 'vr', names)
end
local now = tonumber(ARGV[5])
local this = 'x:' .. ARGV[3]
local live, oldest, oldest_at = 0, nil, nil
local record = redis.call('HGETALL', KEYS[1])
for i = 1, #record, 2 do
  local field = record[i]
  if string.sub(field, 1, 2) == 'x:' and field ~= this then
    local expires = tonumber(record[i + 1])
    if expires <= now then
      redis.call('HDEL', KEYS[1], field)
    else
      live = live + 1
      if oldest_at == nil or expires < oldest_at then oldest, oldest_at = field, expires end
    end
  end
end
if live >= tonumber(ARGV[4]) then
  redis.call('HDEL', KEYS[1], oldest)
  redis.call('DEL', KEYS[1] .. ':' .. string.sub(oldest, 3))
end
local variant = KEYS[1] .. ':' .. ARGV[3]
redis.call('DEL', variant)
redis.call('HSET', variant, unpack(fields))
redis.call('EXPIRE', variant, ttl)
redis.call('HSET', KEYS[1], this, now + ttl)
if redis.call('TTL', KEYS[1]) < ttl then redis.call('EXPIRE', KEYS[1], ttl) end
return 1
"""
)


@dataclasses.dataclass(frozen=True)
class Lookup:
    """The outcome of a lookup: ``hit`` with an entry, ``miss``, ``vary-miss``
    (the URL is stored, not this variant) or ``unavailable`` (Redis failed)."""

    outcome: str
    entry: CachedResponse | None = None


MISS = Lookup("miss")
VARY_MISS = Lookup("vary-miss")
UNAVAILABLE = Lookup("unavailable")


def make_client(settings: Settings) -> redis.Redis:
    """A client whose every call is bounded by ``socket_timeout`` and never
    retried, so a dead Redis costs at most one timeout."""
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.socket_timeout,
        socket_connect_timeout=settings.socket_timeout,
        retry=Retry(NoBackoff(), 0),
    )


def _encode(value: str) -> bytes:
    return value.encode("latin-1", "replace")


class RedisStore:
    """Stored responses in Redis. Every method fails open: a Redis error is
    logged once, opens the circuit breaker for ``breaker_cooldown`` seconds
    (during which Redis is not called at all) and reads as a miss."""

    def __init__(self, client: t.Any, settings: Settings) -> None:
        kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
        if kwargs.get("decode_responses"):
            raise ValueError(
                "client: a redis client with decode_responses=True cannot hold"
                " response bodies; pass one created with decode_responses=False"
            )
        self.client = client
        self.settings = settings
        self._lookup = client.register_script(LOOKUP)
        self._save = client.register_script(SAVE)
        self._purge = client.register_script(PURGE)
        self._closed_at = 0.0
        self._healthy = True

    def _call(self, operation: Callable[[], T], default: T) -> T:
        if not self._healthy and time.monotonic() < self._closed_at:
            return default
        try:
            result = operation()
        except redis.ResponseError as error:
            # Redis is up and refused this one command (a foreign key type, OOM,
            # a read-only replica): fail this operation, not the connection.
            logger.debug("Redis refused a command: %s", error)
            return default
        except (redis.RedisError, OSError) as error:
            if self._healthy:
                logger.warning(
                    "Redis unavailable (%s: %s); serving uncached, retrying every %gs",
                    type(error).__name__,
                    error,
                    self.settings.breaker_cooldown,
                )
            self._healthy = False
            self._closed_at = time.monotonic() + self.settings.breaker_cooldown
            return default
        if not self._healthy:
            logger.warning("Redis reachable again; caching resumed")
            self._healthy = True
        return result

    @property
    def available(self) -> bool:
        """False while the circuit breaker is open."""
        return self._healthy or time.monotonic() >= self._closed_at

    def lookup(self, key: str, url: str, headers: Mapping[str, str]) -> Lookup:
        """The entry stored for ``key`` and the request headers' variant."""
        args: list[bytes] = []
        for name, value in headers.items():
            args.append(_encode(name))
            args.append(_encode(value))
        reply = self._call(lambda: self._lookup(keys=[key], args=args), None)
        if reply is None:
            return UNAVAILABLE
        try:
            outcome = reply[0]
            if outcome == b"miss":
                return MISS
            if outcome == b"vary-miss":
                return VARY_MISS
            flat = reply[1]
            entry = CachedResponse.from_mapping(dict(zip(flat[::2], flat[1::2], strict=True)))
        except (ValueError, IndexError, TypeError) as error:
            logger.debug("unreadable entry under %s: %s", key, error)
            return MISS
        if entry.url != url:
            return MISS
        return Lookup("hit", entry)

    def save(
        self,
        key: str,
        entry: CachedResponse,
        ttl: int,
        variant: str,
    ) -> bool:
        """Store ``entry`` for ``ttl`` seconds in one atomic script; ``variant``
        is its secondary key when it has Vary names."""
        args: list[t.Any] = [
            ttl,
            ",".join(entry.vary),
            variant,
            self.settings.max_variants,
            repr(time.time()),
        ]
        for field, value in entry.to_mapping().items():
            args.append(field)
            args.append(value)
        return bool(self._call(lambda: self._save(keys=[key], args=args), 0))

    def purge_url(self, url: str) -> bool:
        """Forget every stored variant of ``url``. False if Redis failed."""
        key = primary_key(self.settings.prefix, url)
        return self._call(lambda: self._purge(keys=[key]), None) is not None
