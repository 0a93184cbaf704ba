"""The only module that talks to Redis: lookup, save and purge of stored
responses and the locks that coalesce misses, each one round trip, behind a
circuit breaker that fails open."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import typing as t
from collections.abc import Callable, Mapping

import redis
from redis.backoff import NoBackoff
from redis.exceptions import ClusterDownError, RedisClusterException
from redis.retry import Retry

from .entry import FIELDS, CachedResponse
from .keys import primary_key, variant_id
from .near import CLEAR_ALL

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

# KEYS[1]: the base key of a miss. ARGV[1]: a lock token, ARGV[2]: the lock's
# lifetime in ms, ARGV[3]: '1' if what the key holds is unusable anyway. Says
# whether an entry was stored since the lookup ('stored'),
# the last fetch was not storable ('hfm'), or whether this request took the
# lock ('leader') or someone else holds it ('follower').
MISS = """
if ARGV[3] ~= '1' and redis.call('TYPE', KEYS[1])['ok'] == 'hash'
    and redis.call('HEXISTS', KEYS[1], 'v') == 1 then
  return 'stored'
end
if redis.call('EXISTS', KEYS[1] .. ':hfm') == 1 then return 'hfm' end
if redis.call('SET', KEYS[1] .. ':lock', ARGV[1], 'NX', 'PX', ARGV[2]) then return 'leader' end
return 'follower'
"""

# KEYS[1]: the base key of a stored entry that needs a fetch. ARGV[1]: a lock
# token, ARGV[2]: the lock's lifetime in ms, ARGV[3]: the 'fetch' field of the
# entry the caller looked up. Takes the lock ('leader') only while that entry is
# still the one stored: one stored since ('changed') makes the fetch pointless.
LOCK = """
if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash'
    or redis.call('HGET', KEYS[1], 'fetch') ~= ARGV[3] then
  return 'changed'
end
if redis.call('SET', KEYS[1] .. ':lock', ARGV[1], 'NX', 'PX', ARGV[2]) then return 'leader' end
return 'follower'
"""

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
class Lock:
    """A held lock: its key and the token that proves it is ours."""

    key: str
    token: str


@dataclasses.dataclass(slots=True)
class Lookup:
    """The outcome of a lookup.

    ``outcome`` is ``hit`` (with ``entry``), ``miss``, ``vary-miss`` (the URL is
    stored, not this variant) or ``unavailable`` (Redis failed). ``base`` is the
    key the entry lives under and its lock and marker hang off. ``role`` says,
    on a miss, whether this request took the lock (``leader``, with ``lock``),
    another request holds it (``follower``), or the last fetch was not storable
    (``hfm``).
    """

    outcome: str
    entry: CachedResponse | None = None
    base: str = ""
    role: str = ""
    lock: Lock | None = None


UNAVAILABLE = Lookup("unavailable")
# What a lookup asks for: an entry's fields, and the Vary record's names.
LOOKUP_FIELDS = (*FIELDS, "vr")
# Primary keys whose Vary names a process remembers (forgotten all at once).
VARY_MEMO_SIZE = 10_000
# Entries whose decoding a process remembers, with the bytes they came from, so
# that a hit on unchanged bytes skips parsing them again (forgotten all at once).
DECODED_MEMO_SIZE = 1_000
DECODED_MEMO_BODY = 16 * 1024


def new_token() -> str:
    """A lock token no other request, process or host will have."""
    return os.urandom(12).hex()


def make_client(settings: Settings) -> redis.Redis:
    """A client whose every call is bounded by ``socket_timeout`` and never
    retried, so a dead Redis costs at most one timeout."""
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.socket_timeout,
        socket_connect_timeout=settings.socket_timeout,
        retry=Retry(NoBackoff(), 0),
    )


class RedisStore:
    """Stored responses in Redis. Every method fails open: a Redis error is
    logged once, opens the circuit breaker for ``breaker_cooldown`` seconds
    (during which Redis is not called at all) and reads as a miss."""

    def __init__(self, client: t.Any, settings: Settings) -> None:
        # get_connection_kwargs() covers RedisCluster, which has no connection_pool.
        kwargs = getattr(client, "get_connection_kwargs", dict)() or getattr(
            getattr(client, "connection_pool", None), "connection_kwargs", {}
        )
        if kwargs.get("decode_responses"):
            raise ValueError(
                "client: a redis client with decode_responses=True cannot hold"
                " response bodies; pass one created with decode_responses=False"
            )
        self.client = client
        self.settings = settings
        self.channel = f"{settings.prefix}:invalidate"
        self.stats_key = f"{settings.prefix}:stats"
        self._pool = client.connection_pool if isinstance(client, redis.Redis) else None
        self._try_miss = client.register_script(MISS)
        self._vary_names: dict[str, tuple[str, ...]] = {}
        self._decoded: dict[str, tuple[list[bytes | None], CachedResponse]] = {}
        self._save = client.register_script(SAVE)
        self._purge = client.register_script(PURGE)
        self._release = client.register_script(RELEASE)
        self._lock = client.register_script(LOCK)
        self._lock_ms = int(settings.lock_timeout * 1000)
        self._closed_at = 0.0
        self._healthy = True

    def _call(self, operation: Callable[[], T], default: T, refused: T | None = None) -> T:
        """Run ``operation``; ``default`` if Redis fails (or the breaker is open),
        ``refused`` (else ``default``) if Redis answers this command with an error."""
        if not self._healthy and time.monotonic() < self._closed_at:
            return default
        try:
            result = operation()
        except (redis.RedisError, RedisClusterException, OSError) as error:
            # ClusterDownError is a ResponseError, but says the cluster serves nothing.
            if isinstance(error, redis.ResponseError) and not isinstance(error, ClusterDownError):
                # Redis is up and refused this one command (a foreign key type, OOM,
                # a read-only replica): fail this operation, not the connection.
                logger.debug("Redis refused a command: %s", error)
                return default if refused is None else refused
            # Unreachable, timed out, or a RedisClusterException (not a
            # RedisError) from a RedisCluster client that can reach no node.
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
        self, key: str, url: str, headers: Mapping[str, str], coalesce: bool = False
    ) -> Lookup:
        """The entry stored for ``key`` and the request headers' variant: one
        ``HMGET`` in the steady state, Vary'd URLs included (their Vary names are
        remembered per process). On a miss, with ``coalesce``, also try to take
        the key's lock (a second round trip, misses only)."""
        found = self._look_up(key, url, headers, coalesce)
        if found.role == "stored":
            # Stored between the lookup and the lock: look again, once.
            found = self._look_up(key, url, headers, coalesce)
        return found

    def _look_up(self, key: str, url: str, headers: Mapping[str, str], coalesce: bool) -> Lookup:
        names = self._vary_names.get(key)
        if names is not None:
            base = f"{key}:{variant_id(names, headers)}"
            values = self._hmget(base, FIELDS)
            if values is None:
                return UNAVAILABLE
            if values[0] is not None:
                found = self._found(base, values, url, coalesce)
                if found.entry is not None and found.entry.vary == names:
                    return found
        values = self._hmget(key, LOOKUP_FIELDS)
        if values is None:
            return UNAVAILABLE
        record = values[-1]
        if record is None:
            self._vary_names.pop(key, None)
            base, outcome, values = key, "miss", values[:-1]
        else:
            names = tuple(record.decode("latin-1").split(","))
            self._remember(key, names)
            base, outcome = f"{key}:{variant_id(names, headers)}", "vary-miss"
            values = self._hmget(base, FIELDS)
            if values is None:
                return UNAVAILABLE
        if values[0] is not None:
            return self._found(base, values, url, coalesce)
        return self._miss(outcome, base, coalesce)

    def _hmget(self, key: str, fields: tuple[str, ...]) -> list[bytes | None] | None:
        """The fields' values; all None for a key holding something else than a
        hash (another program's data is a miss, and is overwritten)."""
        return self._call(
            lambda: self._command("HMGET", key, *fields), None, refused=[None] * len(fields)
        )

    def _command(self, *args: t.Any) -> t.Any:
        """One command on a pooled connection, without the client's retry and
        instrumentation layers: the hit path's one round trip. A cluster client
        (no single pool) routes the command itself."""
        if self._pool is None:
            return self.client.execute_command(*args)
        connection = self._pool.get_connection()
        try:
            connection.send_command(*args)
            return connection.read_response()
        except redis.ResponseError:
            raise  # an error reply: the connection is still in step
        except BaseException:
            connection.disconnect()
            raise
        finally:
            self._pool.release(connection)

    def _found(self, base: str, values: list[bytes | None], url: str, coalesce: bool) -> Lookup:
        decoded = self._decoded.get(base)
        if decoded is not None and decoded[0] == values:
            # The same bytes as last time: reuse what they decoded to.
            return Lookup("hit", decoded[1], base)
        try:
            entry = CachedResponse.from_values(values)
        except ValueError as error:
            logger.debug("unreadable entry under %s: %s", base, error)
            return self._miss("miss", base, coalesce, unusable=True)
        if entry.url != url:
            return self._miss("miss", base, coalesce, unusable=True)
        if len(entry.body) <= DECODED_MEMO_BODY:
            if len(self._decoded) >= DECODED_MEMO_SIZE:
                self._decoded.clear()
            self._decoded[base] = (values, entry)
        return Lookup("hit", entry, base)

    def _miss(self, outcome: str, base: str, coalesce: bool, unusable: bool = False) -> Lookup:
        if not coalesce:
            return Lookup(outcome, None, base)
        lock = Lock(base + ":lock", new_token())
        args = [lock.token, self._lock_ms, "1" if unusable else ""]
        reply = self._call(lambda: self._try_miss(keys=[base], args=args), b"")
        role = reply.decode() if isinstance(reply, bytes) else ""
        return Lookup(outcome, None, base, role, lock if role == "leader" else None)

    def _remember(self, key: str, names: tuple[str, ...]) -> None:
        if len(self._vary_names) >= VARY_MEMO_SIZE:
            self._vary_names.clear()
        self._vary_names[key] = names

    def save(
        self, key: str, entry: CachedResponse, ttl: int, variant: str, lock: Lock | None = None
    ) -> bool:
        """Store ``entry`` for ``ttl`` seconds in one atomic script; ``variant``
        is its secondary key when it has Vary names. Releases ``lock``."""
        entry = dataclasses.replace(entry, fetch=lock.token if lock else new_token())
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

    def try_lock(self, base: str, seen: CachedResponse) -> Lock | None:
        """Take the lock of ``base`` for ``lock_timeout`` seconds, to fetch a
        replacement for ``seen``: only if the lock is free and ``seen`` is still
        the entry stored there (another request may have replaced it since the
        lookup, and released its lock)."""
        lock = Lock(base + ":lock", new_token())
        args = [lock.token, self._lock_ms, seen.fetch]
        taken = self._call(lambda: self._lock(keys=[base], args=args), None)
        return lock if taken == b"leader" else None

    def release(self, lock: Lock, hit_for_miss: int = 0) -> None:
        """Give up ``lock``; with ``hit_for_miss``, mark its key as not worth
        waiting for during that many seconds."""
        keys = [lock.key, lock.key.removesuffix(":lock") + ":hfm"]
        self._call(lambda: self._release(keys=keys, args=[lock.token, hit_for_miss]), None)

    def purge_url(self, url: str) -> bool:
        """Forget every stored variant of ``url``. False if Redis failed."""
        key = primary_key(self.settings.prefix, url)
        return self._call(lambda: self._purge(keys=[key], args=[self.channel]), None) is not None

    def purge_all(self) -> int:
        """Forget everything under this cache's prefix; how many keys went.
        Raises the Redis error, if any: this is an operator's command."""
        count = 0
        batch: list[bytes] = []
        for name in self.client.scan_iter(match=f"{self.settings.prefix}:{{*", count=1000):
            batch.append(name)
            if len(batch) == 500:
                count += self.client.delete(*batch)
                batch.clear()
        if batch:
            count += self.client.delete(*batch)
        self.client.publish(self.channel, CLEAR_ALL)
        return count

    def entries_of(self, url: str) -> list[tuple[str, CachedResponse | None, int]]:
        """Every key stored for ``url``, the entry it holds (None when it is
        unreadable) and its Redis TTL. Raises the Redis error, if any: this is an
        operator's command."""
        key = primary_key(self.settings.prefix, url)
        names = self.client.hget(key, "vr")
        if names is None:
            bases = [key]
        else:
            fields = self.client.hkeys(key)
            bases = [f"{key}:{field[2:].decode()}" for field in fields if field.startswith(b"x:")]
        found: list[tuple[str, CachedResponse | None, int]] = []
        for base in bases:
            values = self.client.execute_command("HMGET", base, *FIELDS)
            if values[0] is None:
                continue
            ttl = self.client.ttl(base)
            try:
                found.append((base, CachedResponse.from_values(values), ttl))
            except ValueError:
                found.append((base, None, ttl))
        return found

    def add_counts(self, counts: Mapping[str, int]) -> bool:
        """Add outcome counts to the ``<prefix>:stats`` hash, in one round trip."""

        def add() -> bool:
            pipeline = self.client.pipeline(transaction=False)
            for outcome, number in counts.items():
                pipeline.hincrby(self.stats_key, outcome, number)
            pipeline.execute()
            return True

        return self._call(add, False)

    def counts(self) -> dict[str, int]:
        """The outcome counts of every process so far. Raises the Redis error,
        if any: this is an operator's command."""
        return {
            name.decode(): int(value) for name, value in self.client.hgetall(self.stats_key).items()
        }
