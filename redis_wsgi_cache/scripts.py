"""The Lua scripts :mod:`redis_wsgi_cache.store` runs in Redis, each one atomic
step on the keys of one URL (one Redis Cluster slot).

Keys of one URL, all in the slot of the primary key's {hash tag}:

- ``<primary>``: the entry, or the Vary record (``vr`` = header names,
  ``x:<variant>`` = expiry time of each stored variant)
- ``<primary>:<variant>``: the entry of one variant
- ``<base>:lock``: held by the one request that fetches ``<base>``: its token,
  ``:``, and when the lock was taken (Redis time, in microseconds)
- ``<base>:hfm``: "hit-for-miss", the last fetch of ``<base>`` was not storable

where ``<base>`` is the primary key, or the variant key when the URL has a Vary.

The indexes (see :mod:`redis_wsgi_cache.index`) that make purges cost what they
purge, kept by the save script (or, on Redis Cluster, by the index scripts just
before it):

- ``<prefix>:{<prefix>:index}:urls``: members ``<url>\n<primary key>`` of equal
  score, in lexical order, for purges by URL and URL prefix;
- ``<prefix>:{<prefix>:index}:expiry``: the same members, scored by when their
  entries expire; expired members leave both as stores go by;
- ``<prefix>:tag:{<digest of the tag>}``: primary keys scored by expiry.

The scripts never fail on what they find: a key of another type, a lock without
an expiry or a field that is not a number is treated as garbage, and replaced.
"""

from __future__ import annotations

# The locks' functions. stamp: the time now (microseconds). take: take a lock,
# stamped with the time (which entries stored by its fetch carry, so that a
# request can tell a response made after it arrived). holds: whether a lock is
# held by a token. clear_garbage: make the lock of a base key takeable (a key
# of another type or a lock without an expiry, neither ever one of ours, is
# deleted, as is a hit-for-miss marker without one). contend: for a fetch of a
# base key, say 'hfm' if the key is hit-for-miss (when asked), take the lock
# ('leader') or say another holds it ('follower'); with the time now.
_LOCKS = """
local function stamp()
  local now = redis.call('TIME')
  return now[1] .. string.format('%06d', tonumber(now[2]))
end
local function take(base, token, lease, now)
  return redis.call('SET', base .. ':lock', token .. ':' .. now, 'NX', 'PX', lease)
end
local function holds(lock, token)
  local held = redis.call('GET', lock)
  return held and string.sub(held, 1, #token + 1) == token .. ':'
end
local function clear_garbage(base)
  local lock = base .. ':lock'
  local kind = redis.call('TYPE', lock)['ok']
  if kind ~= 'none' and (kind ~= 'string' or redis.call('PTTL', lock) < 0) then
    redis.call('DEL', lock)
  end
  if redis.call('TTL', base .. ':hfm') == -1 then redis.call('DEL', base .. ':hfm') end
end
local function contend(base, token, lease, now, hit_for_miss)
  clear_garbage(base)
  if hit_for_miss and redis.call('EXISTS', base .. ':hfm') == 1 then return {'hfm', now} end
  if take(base, token, lease, now) then return {'leader', now} end
  return {'follower', now}
end
"""

# KEYS[1]: the base key of a miss. ARGV[1]: a lock token, ARGV[2]: the lock's
# lease in ms, ARGV[3]: '1' if what the key holds is unusable anyway. Says
# whether an entry was stored since the lookup ('stored'), the last fetch was
# not storable ('hfm'), or whether this request took the lock ('leader') or
# another holds it ('follower'); and the time now.
MISS = (
    _LOCKS
    + """
local now = stamp()
if ARGV[3] ~= '1' and redis.call('TYPE', KEYS[1])['ok'] == 'hash'
    and redis.call('HEXISTS', KEYS[1], 'v') == 1 then
  return {'stored', now}
end
return contend(KEYS[1], ARGV[1], ARGV[2], now, true)
"""
)

# KEYS[1]: the base key of a stored entry that needs a fetch. ARGV[1]: a lock
# token, ARGV[2]: the lock's lease in ms, ARGV[3]: the 'fetch' field of the
# entry the caller looked up. Takes the lock ('leader') only while that entry is
# still the one stored: one stored since ('changed') makes the fetch pointless.
# And the time now.
LOCK = (
    _LOCKS
    + """
local now = stamp()
if redis.call('TYPE', KEYS[1])['ok'] ~= 'hash'
    or redis.call('HGET', KEYS[1], 'fetch') ~= ARGV[3] then
  return {'changed', now}
end
return contend(KEYS[1], ARGV[1], ARGV[2], now, false)
"""
)

# KEYS[1]: the base key of a request that needs a response made after it
# arrived (no-cache, max-age, min-fresh). ARGV[1]: a lock token, ARGV[2]: the
# lock's lease in ms, ARGV[3]: when the request arrived (0 the first time).
# Says that the stored entry was fetched after that ('ready'), that the key is
# hit-for-miss ('hfm'), or takes the lock if it is free ('leader'), else waits
# ('follower'); with the time now.
JOIN = (
    _LOCKS
    + """
local now = stamp()
local arrived = tonumber(ARGV[3]) or 0
if arrived > 0 and redis.call('TYPE', KEYS[1])['ok'] == 'hash'
    and (tonumber(redis.call('HGET', KEYS[1], 'started')) or 0) >= arrived then
  return {'ready', now}
end
return contend(KEYS[1], ARGV[1], ARGV[2], now, true)
"""
)

# KEYS[1]: a key (for a cluster to run this on its node). The time now.
NOW = (
    _LOCKS
    + """
return stamp()
"""
)

# KEYS[1]: a lock. ARGV[1]: its token, ARGV[2]: the new lease in ms. Extends the
# lease of a lock still held with that token; 1 if it was.
RENEW = (
    _LOCKS
    + """
if holds(KEYS[1], ARGV[1]) then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
)

# KEYS[1]: a lock, KEYS[2]: its hit-for-miss marker. ARGV[1]: the token,
# ARGV[2]: seconds to mark the key hit-for-miss (0: none).
RELEASE = (
    _LOCKS
    + """
if holds(KEYS[1], ARGV[1]) then redis.call('DEL', KEYS[1]) end
if tonumber(ARGV[2]) > 0 then redis.call('SET', KEYS[2], '1', 'EX', ARGV[2]) end
return 1
"""
)

# The stored responses under a primary key: the entry, or the variants its Vary
# record lists.
_ENTRIES = """
local function entries(key)
  if redis.call('TYPE', key)['ok'] ~= 'hash' then return {} end
  if redis.call('HEXISTS', key, 'vr') == 0 then return {key} end
  local found = {}
  for _, field in ipairs(redis.call('HKEYS', key)) do
    if string.sub(field, 1, 2) == 'x:' then
      found[#found + 1] = key .. ':' .. string.sub(field, 3)
    end
  end
  return found
end
"""

# Deletes what a primary key holds: the entry or Vary record, its variants, and
# their hit-for-miss markers; returns how many responses went.
_DROP = (
    _ENTRIES
    + """
local function drop(key)
  local dropped = 0
  for _, entry in ipairs(entries(key)) do
    if redis.call('HEXISTS', entry, 'v') == 1 then dropped = dropped + 1 end
    redis.call('DEL', entry, entry .. ':hfm')
  end
  redis.call('DEL', key, key .. ':hfm')
  return dropped
end
"""
)

# KEYS[1]: primary key. ARGV[1]: the invalidation channel. How many responses
# went.
PURGE = (
    _DROP
    + """
local dropped = drop(KEYS[1])
redis.call('PUBLISH', ARGV[1], KEYS[1])
return dropped
"""
)

# KEYS[1]: primary key. ARGV[1]: the invalidation channel, ARGV[2]: the time
# now, ARGV[3]: keep (seconds a stale entry with a validator is kept), ARGV[4]:
# the grace window. Marks every response under the key stale from now on (its
# freshness lifetime becomes its current age), so that the next request
# revalidates it while stale-while-revalidate and stale-if-error may still use
# it; the Redis expiry shrinks to what a stale entry is kept for, and an entry
# of no use stale goes. How many responses were marked.
SOFTEN = (
    _ENTRIES
    + """
local now, keep, grace = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local marked = 0
for _, entry in ipairs(entries(KEYS[1])) do
  local f = redis.call(
    'HMGET', entry, 'v', 'stored_at', 'age', 'fresh', 'swr', 'sie', 'etag', 'lm', 'flags')
  local stored_at, age, fresh = tonumber(f[2]), tonumber(f[3]), tonumber(f[4])
  if f[1] and stored_at and age and fresh then
    local current = age + math.max(0, now - stored_at)
    if fresh > current then redis.call('HSET', entry, 'fresh', string.format('%.6f', current)) end
    local stale = 0
    if not string.find(f[9] or '', 'r', 1, true) then
      stale = math.max(tonumber(f[5]) or 0, tonumber(f[6]) or 0, grace)
    end
    if (f[7] or '') ~= '' or (f[8] or '') ~= '' then stale = math.max(stale, keep) end
    marked = marked + 1
    if stale <= 0 then
      redis.call('DEL', entry)
    else
      local left = redis.call('TTL', entry)
      if left < 0 or left > stale then redis.call('EXPIRE', entry, math.ceil(stale)) end
    end
  end
end
redis.call('PUBLISH', ARGV[1], KEYS[1])
return marked
"""
)

# Index upkeep, shared by SAVE and the index scripts. `urls` and `expiry` are
# the URL index, `members` its members for one entry; `tag` a tag index and
# `member` the entry's primary key; `expires` when the entry expires.
_INDEX = """
local function zset(key)
  local kind = redis.call('TYPE', key)['ok']
  if kind ~= 'zset' and kind ~= 'none' then redis.call('DEL', key) end
end
local function outlive(key, ttl)
  if redis.call('TTL', key) < ttl then redis.call('EXPIRE', key, ttl) end
end
local function index_urls(urls, expiry, members, expires, ttl, now)
  zset(urls)
  zset(expiry)
  for _, member in ipairs(members) do
    redis.call('ZADD', urls, 0, member)
    redis.call('ZADD', expiry, 'GT', expires, member)
  end
  local gone = redis.call('ZRANGEBYSCORE', expiry, '-inf', now, 'LIMIT', 0, 100)
  if #gone > 0 then
    redis.call('ZREM', urls, unpack(gone))
    redis.call('ZREM', expiry, unpack(gone))
  end
  outlive(urls, ttl)
  outlive(expiry, ttl)
end
local function index_tag(tag, member, expires, ttl, now)
  zset(tag)
  redis.call('ZADD', tag, 'GT', expires, member)
  redis.call('ZREMRANGEBYSCORE', tag, '-inf', now)
  outlive(tag, ttl)
end
"""

# KEYS[1], KEYS[2]: the URL index. ARGV[1]: when the entry expires, ARGV[2]: its
# ttl, ARGV[3]: the time now, then the members.
INDEX_URLS = (
    _INDEX
    + """
local members = {}
for i = 4, #ARGV do members[#members + 1] = ARGV[i] end
index_urls(KEYS[1], KEYS[2], members, ARGV[1], tonumber(ARGV[2]), ARGV[3])
return 1
"""
)

# KEYS[1]: a tag index. ARGV[1]: the entry's primary key, ARGV[2]: when it
# expires, ARGV[3]: its ttl, ARGV[4]: the time now.
INDEX_TAG = (
    _INDEX
    + """
index_tag(KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4])
return 1
"""
)

# KEYS[1]: primary key, KEYS[2]: the lock the saver may hold, then (unless
# the caller keeps them itself) KEYS[3], KEYS[4]: the URL index and KEYS[5…]: tag
# indexes. ARGV: ttl, Vary names ('' for none), variant id, the most variants
# to keep, the time now, the invalidation channel, the lock token ('' for
# none), the number n of URL index members, the n members, then the entry's
# fields and values. Keeps the Vary record's list of live variants and evicts
# the variant that expires first once there are too many. Writes nothing (and
# returns 0) for a ttl that is not a whole number of seconds from 1 to 2^32, so
# that no key is ever left without an expiry.
SAVE = (
    _LOCKS
    + _DROP
    + _INDEX
    + """
local ttl = tonumber(ARGV[1])
if ttl == nil or ttl < 1 or ttl > 4294967296 or ttl ~= math.floor(ttl) then return 0 end
local names = ARGV[2]
local count = tonumber(ARGV[8])
local members = {}
for i = 9, 8 + count do members[#members + 1] = ARGV[i] end
local fields = {}
for i = 9 + count, #ARGV do fields[#fields + 1] = ARGV[i] end
if #KEYS > 2 then
  local expires = tonumber(ARGV[5]) + ttl
  index_urls(KEYS[3], KEYS[4], members, expires, ttl, ARGV[5])
  for i = 5, #KEYS do index_tag(KEYS[i], KEYS[1], expires, ttl, ARGV[5]) end
end
if ARGV[7] ~= '' and holds(KEYS[2], ARGV[7]) then redis.call('DEL', KEYS[2]) end
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
    local expires = tonumber(record[i + 1]) or 0
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
