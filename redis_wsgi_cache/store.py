"""The only module that talks to Redis: lookup, save and purge of stored
responses and the locks that coalesce misses, each one round trip, behind a
circuit breaker that fails open."""

from __future__ import annotations

import dataclasses
import logging
import time
import typing as t
from collections.abc import Callable, Mapping

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .entry import FIELDS, CachedResponse
from .keys import primary_key

if t.TYPE_CHECKING:
    from .settings import Settings

logger = logging.getLogger("redis_wsgi_cache")

T = t.TypeVar("T")

# Keys of one URL, all in the slot of the primary key's {hash tag}:
#   <primary>                 the entry, or the Vary record ('vr' = header names,
#                             'x:<variant>' = expiry time of each stored variant)
#   <primary>:<variant>       the entry of one variant
#   <base>:lock               held by the one request that fetches <base>
#   <base>:hfm                "hit-for-miss": the last fetch was not storable
# where <base> is the primary key, or the variant key when the URL has a Vary.

_VARIANT = """
local function variant_of(headers, names)
  local request = {}
  local name = nil
  for line in string.gmatch(headers, '([^\\n]*)\\n') do
    if name == nil then name = line else request[name] = line; name = nil end
  end
  local parts = {}
  for header in string.gmatch(names, '[^,]+') do
    local value = request[header]
    if value ~= nil then header = header .. '=' .. value end
    parts[#parts + 1] = header
  end
  return redis.sha1hex(table.concat(parts, '\\n'))
end
"""

# KEYS[1]: primary key. ARGV[1]: the request's headers, "name\nvalue\n" each;
# ARGV[2]: a lock token, or '' not to take the lock on a miss; ARGV[3]: the
# lock's lifetime in ms. Answers {'hit', base, <FIELDS values>}, or
# {'miss' | 'vary-miss', base, 'leader' | 'follower' | 'hfm' | ''}.
LOOKUP = (
    _VARIANT
    + """
local base = KEYS[1]
local outcome = 'miss'
local names = redis.pcall('HGET', KEYS[1], 'vr')
if type(names) == 'string' then
  base = KEYS[1] .. ':' .. variant_of(ARGV[1], names)
  outcome = 'vary-miss'
end
local values = redis.pcall('HMGET', base, FIELD_NAMES)
if type(values) == 'table' and not values.err and values[1] then
  return {'hit', base, unpack(values)}
end
if redis.call('EXISTS', base .. ':hfm') == 1 then return {outcome, base, 'hfm'} end
if ARGV[2] == '' then return {outcome, base, ''} end
if redis.call('SET', base .. ':lock', ARGV[2], 'NX', 'PX', ARGV[3]) then
  return {outcome, base, 'leader'}
end
return {outcome, base, 'follower'}
""".replace("FIELD_NAMES", ", ".join(f"'{name}'" for name in FIELDS))
)

# Deletes what a primary key holds: the entry or Vary record, its variants, and
# their hit-for-miss markers; then tells near caches (channel ARGV[1]).
_DROP = """
local function drop(key)
  if redis.call('TYPE', key)['ok'] == 'hash' and redis.call('HEXISTS', key, 'vr') == 1 then
    for _, field in ipairs(redis.call('HKEYS', key)) do
      if string.sub(field, 1, 2) == 'x:' then
        local variant = key .. ':' .. string.sub(field, 3)
        redis.call('DEL', variant, variant .. ':hfm')
      end
    end
  end
  return redis.call('DEL', key, key .. ':hfm')
end
"""

# KEYS[1]: primary key. ARGV[1]: the invalidation channel.
PURGE = (
    _DROP
    + """
local dropped = drop(KEYS[1])
redis.call('PUBLISH', ARGV[1], KEYS[1])
return dropped
"""
)

# KEYS[1]: primary key, KEYS[2]: the lock the saver may hold. ARGV: ttl, Vary
# names ('' for none), variant id, the most variants to keep, the time now, the
# invalidation channel, the lock token ('' for none), then the entry's fields
# and values. Keeps the Vary record's list of live variants and evicts the
# variant that expires first once there are too many.
SAVE = (
    _DROP
    + """
local ttl = tonumber(ARGV[1])
local names = ARGV[2]
local fields = {}
for i = 8, #ARGV do fields[#fields + 1] = ARGV[i] end
if ARGV[7] ~= '' and redis.call('GET', KEYS[2]) == ARGV[7] then redis.call('DEL', KEYS[2]) end
redis.call('PUBLISH', ARGV[6], KEYS[1])
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
redis.call('DEL', variant, variant .. ':hfm')
redis.call('HSET', variant, unpack(fields))
redis.call('EXPIRE', variant, ttl)
redis.call('HSET', KEYS[1], this, now + ttl)
if redis.call('TTL', KEYS[1]) < ttl then redis.call('EXPIRE', KEYS[1], ttl) end
return 1
"""
)

# KEYS[1]: a lock, KEYS[2]: its hit-for-miss marker. ARGV[1]: the token,
# ARGV[2]: seconds to mark the key hit-for-miss (0: none).
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
if tonumber(ARGV[2]) > 0 then redis.call('SET', KEYS[2], '1', 'EX', ARGV[2]) end
return 1
"""


@dataclasses.dataclass(frozen=True)
class Lookup:
    """The outcome of a lookup.

    ``outcome`` is ``hit`` (with ``entry``), ``miss``, ``vary-miss`` (the URL is
    stored, not this variant) or ``unavailable`` (Redis failed). ``base`` is the
    key the entry lives under and its lock and marker hang off. ``role`` says,
    on a miss, whether this request took the lock (``leader``), another request
    holds it (``follower``), or the last fetch was not storable (``hfm``).
    """

    outcome: str
    entry: CachedResponse | None = None
    base: str = ""
    role: str = ""


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
        self.channel = f"{settings.prefix}:invalidate"
        self._lookup = client.register_script(LOOKUP)
        self._save = client.register_script(SAVE)
        self._purge = client.register_script(PURGE)
        self._release = client.register_script(RELEASE)
        self._lock_ms = int(settings.lock_timeout * 1000)
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

    def lookup(
        self, key: str, url: str, headers: Mapping[str, str], lock_token: str = ""
    ) -> Lookup:
        """The entry stored for ``key`` and the request headers' variant, in one
        round trip; on a miss, also try to take the key's lock with
        ``lock_token`` (if given)."""
        joined = "".join(f"{name}\n{value}\n" for name, value in headers.items())
        args = (_encode(joined), lock_token, self._lock_ms)
        reply = self._call(lambda: self._lookup(keys=[key], args=args), None)
        if reply is None:
            return UNAVAILABLE
        outcome, base = reply[0].decode(), reply[1].decode()
        if outcome != "hit":
            return Lookup(outcome, None, base, reply[2].decode())
        try:
            entry = CachedResponse.from_values(reply[2:])
        except ValueError as error:
            logger.debug("unreadable entry under %s: %s", base, error)
            return self._unusable(base, lock_token)
        if entry.url != url:
            return self._unusable(base, lock_token)
        return Lookup("hit", entry, base)

    def _unusable(self, base: str, lock_token: str) -> Lookup:
        """A miss on a key that holds something else (another format version,
        another program's data): the next store overwrites it."""
        if not lock_token:
            return Lookup("miss", None, base)
        role = "leader" if self.try_lock(base, lock_token) else "follower"
        return Lookup("miss", None, base, role)

    def save(
        self, key: str, entry: CachedResponse, ttl: int, variant: str, lock: Lock | None = None
    ) -> bool:
        """Store ``entry`` for ``ttl`` seconds in one atomic script; ``variant``
        is its secondary key when it has Vary names. Releases ``lock``."""
        args: list[t.Any] = [
            ttl,
            ",".join(entry.vary),
            variant,
            self.settings.max_variants,
            repr(time.time()),
            self.channel,
            lock.token if lock else "",
        ]
        for field, value in entry.to_mapping().items():
            args.append(field)
            args.append(value)
        keys = [key, lock.key if lock else key + ":lock"]
        return bool(self._call(lambda: self._save(keys=keys, args=args), 0))

    def try_lock(self, base: str, token: str) -> Lock | None:
        """Take the lock of ``base`` for ``lock_timeout`` seconds, if it is free."""
        lock = Lock(base + ":lock", token)
        taken = self._call(
            lambda: self.client.set(lock.key, token, nx=True, px=self._lock_ms), None
        )
        return lock if taken else None

    def release(self, lock: Lock, hit_for_miss: int = 0) -> None:
        """Give up ``lock``; with ``hit_for_miss``, mark its key as not worth
        waiting for during that many seconds."""
        keys = [lock.key, lock.key.removesuffix(":lock") + ":hfm"]
        self._call(lambda: self._release(keys=keys, args=[lock.token, hit_for_miss]), None)

    def purge_url(self, url: str) -> bool:
        """Forget every stored variant of ``url``. False if Redis failed."""
        key = primary_key(self.settings.prefix, url)
        return self._call(lambda: self._purge(keys=[key], args=[self.channel]), None) is not None


@dataclasses.dataclass(frozen=True)
class Lock:
    """A held lock: its key and the token that proves it is ours."""

    key: str
    token: str
