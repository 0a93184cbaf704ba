"""The Lua scripts :mod:`redis_wsgi_cache.store` and :mod:`redis_wsgi_cache.index`
run in Redis, each one atomic step on the keys of one URL (one Redis Cluster
slot) or on the index.

Keys of one URL, all in the slot of the primary key's {hash tag}:

- ``<key>``: a hash holding the stored response (fields ``v``, ``h``, ``b``…,
  ``u``, ``t``: see :mod:`redis_wsgi_cache.entry`), or, for a response with
  ``Vary``, the record of its Vary names (``y``), its live variants and when
  each expires (``x``: ``<variant>:<expiry> …``), and each variant's response
  fields with the suffix ``:<variant>``;
- ``<base>:lock``: the request fetching ``<base>`` (its token, ``:``, and when
  the lock was taken by Redis's clock in µs), on a short lease; or ``hfm``
  ("hit-for-miss": the last fetch of ``<base>`` was not storable, so requests
  go to the app without queueing), until it expires;

where ``<base>`` is the key, or ``<key>:<variant>``.

The indexes that make purges cost what they purge (see
:mod:`redis_wsgi_cache.index`) have no expiry, so that a Redis evicting only
keys with an expiry (``volatile-*``) never evicts them; the save script keeps
them (on Redis Cluster, the index scripts, just before it):

- ``<prefix>:{<prefix>:index}:u:<span>:<n>``: a URL bucket, the canonical URLs
  (followed by a newline and the key's digest when the key holds more than the
  URL) of the entries that expire within the ``n``-th span of ``span`` seconds,
  in lexical order, for purges by URL prefix and of everything;
- ``<prefix>:{<prefix>:index}:ru``: the registry of URL buckets, scored by when
  the last entry a bucket can list expires; the sweep drops both then;
- ``<prefix>:tag:{<digest of the tag>}``: the digests of the keys of the
  entries tagged with it, scored by expiry, cleared of expired members at each
  store;
- ``<prefix>:{<prefix>:index}:rt``: the registry of tag indexes (the tags'
  digests), scored by their last expiry, for the sweep.

The scripts never fail on what they find: a key of another type, a lock without
an expiry or a field that is not a number is treated as garbage, and replaced.
The first write of a save is to an index, so that a Redis refusing writes
(out of memory under ``noeviction``) refuses the whole save.
"""

from __future__ import annotations

# The locks' functions. stamp: the time now (microseconds). contend: take the
# lock of a fetch ('leader'), or say that the last fetch was not storable
# ('hfm', unless the fetch refreshes a stored response, which goes ahead) or
# that another request holds it ('follower'); a lock of another type or
# without an expiry is never one of ours, and is replaced. holds: whether a
# lock is held by a token.
_LOCKS = """
local function stamp()
  local now = redis.call('TIME')
  return now[1] .. string.format('%06d', tonumber(now[2]))
end
local function contend(lock, token, lease, now, hit_for_miss)
  if redis.call('SET', lock, token .. ':' .. now, 'NX', 'PX', lease) then return 'leader' end
  local kind = redis.call('TYPE', lock)['ok']
  local held = kind == 'string' and redis.call('GET', lock)
  if kind ~= 'string' or redis.call('PTTL', lock) < 0 or (held == 'hfm' and not hit_for_miss) then
    redis.call('SET', lock, token .. ':' .. now, 'PX', lease)
    return 'leader'
  end
  if held == 'hfm' then return 'hfm' end
  return 'follower'
end
local function holds(lock, token)
  local held = redis.pcall('GET', lock)
  return type(held) == 'string' and string.sub(held, 1, #token + 1) == token .. ':'
end
"""

# KEYS[1]: the key of a miss, KEYS[2]: the lock of its base. ARGV[1]: a lock
# token, ARGV[2]: the lock's lease in ms, ARGV[3]: the field of the response
# looked up ('' if what the key held was unusable anyway). Says whether the
# response was stored since the lookup ('stored'), or else contends for the
# lock; and the time (0: not asked for).
MISS = (
    _LOCKS
    + """
if ARGV[3] ~= '' and redis.pcall('HEXISTS', KEYS[1], ARGV[3]) == 1 then return {'stored', '0'} end
return {contend(KEYS[2], ARGV[1], ARGV[2], '0', true), '0'}
"""
)

# KEYS[1]: the key of a stored response that needs a fetch, KEYS[2]: the lock
# of its base. ARGV[1]: a lock token, ARGV[2]: the lock's lease in ms, ARGV[3]:
# the response's 'v' field name, ARGV[4]: its value as the caller looked it up.
# Takes the lock only while that response is still the one stored: one stored
# (or marked stale) since says 'changed'.
LOCK = (
    _LOCKS
    + """
if redis.pcall('HGET', KEYS[1], ARGV[3]) ~= ARGV[4] then return {'changed', '0'} end
return {contend(KEYS[2], ARGV[1], ARGV[2], '0', false), '0'}
"""
)

# KEYS[1]: the key of a request that needs a response made after it arrived
# (no-cache, max-age, min-fresh), KEYS[2]: the lock of its base. ARGV[1]: a lock
# token, ARGV[2]: the lock's lease in ms, ARGV[3]: when the request arrived (0
# the first time), ARGV[4]: the field of its response. Says that the stored
# response was fetched after that ('ready'), or contends for the lock; with the
# time now.
JOIN = (
    _LOCKS
    + """
local now = stamp()
local arrived = tonumber(ARGV[3]) or 0
if arrived > 0 then
  local meta = redis.pcall('HGET', KEYS[1], ARGV[4])
  local started = type(meta) == 'string'
    and tonumber(string.match(meta, '^6;[^;]*;[^;]*;[^;]*;[^;]*;[^;]*;[^;]*;(%d+);'))
  if started and started >= arrived then return {'ready', now} end
end
return {contend(KEYS[2], ARGV[1], ARGV[2], now, true), now}
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

# KEYS[1]: a lock. ARGV[1]: the token, ARGV[2]: seconds to mark its base
# hit-for-miss (0: none), in the lock's place, unless another request holds it
# (or, with ARGV[3] 'held', unless the token no longer holds it).
RELEASE = (
    _LOCKS
    + """
local held = holds(KEYS[1], ARGV[1])
local free = ARGV[3] ~= 'held' and redis.call('EXISTS', KEYS[1]) == 0
if (tonumber(ARGV[2]) or 0) > 0 and (held or free) then
  redis.call('SET', KEYS[1], 'hfm', 'EX', ARGV[2])
elseif held then
  redis.call('DEL', KEYS[1])
end
return 1
"""
)

# The responses a key holds: the suffix of each one's fields ('' for a plain
# response, ':<variant>' for each variant its Vary record lists) and when it
# expires (0 for a plain one: its key's expiry); and the Vary record's fields.
# fields: the field names of the response with a suffix.
_RESPONSES = """
local function responses(key)
  local found = redis.pcall('HMGET', key, 'v', 'y', 'x')
  if found.err then return {}, nil end
  local list = {}
  if found[2] then
    for variant, expires in string.gmatch(found[3] or '', '(%x+):(%d+)') do
      list[#list + 1] = {':' .. variant, tonumber(expires)}
    end
  elseif found[1] then
    list[1] = {'', 0}
  end
  return list, found
end
local function fields(suffix)
  return 'v' .. suffix, 'h' .. suffix, 'b' .. suffix, 'b1' .. suffix, 'b2' .. suffix,
    'b3' .. suffix
end
"""

# KEYS[1]: a key. ARGV[1]: the invalidation channel, ARGV[2]: the time now.
# Deletes what the key holds, and its hit-for-miss markers; how many responses
# (still servable) went.
PURGE = (
    _RESPONSES
    + """
local now = tonumber(ARGV[2])
local list = responses(KEYS[1])
local count = 0
list[#list + 1] = {'', -1}
for _, response in ipairs(list) do
  if response[2] == 0 or response[2] > now then count = count + 1 end
  local lock = KEYS[1] .. response[1] .. ':lock'
  if redis.pcall('GET', lock) == 'hfm' then redis.call('DEL', lock) end
end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[1], KEYS[1])
return count
"""
)

# KEYS[1]: a key. ARGV[1]: the invalidation channel, ARGV[2]: the time now,
# ARGV[3]: keep (seconds a stale response with a validator is kept), ARGV[4]:
# the grace window. Marks every response under the key stale from now on (its
# freshness lifetime becomes its current age), so that the next request
# revalidates it while stale-while-revalidate and stale-if-error may still use
# it; Redis keeps it only as long as it is of use stale, and one of no use stale
# goes. How many responses were marked.
SOFTEN = (
    _RESPONSES
    + """
local now, keep, grace = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local list, record = responses(KEYS[1])
local marked, longest, kept = 0, 0, {}
for _, response in ipairs(list) do
  local suffix = response[1]
  local meta = redis.call('HGET', KEYS[1], 'v' .. suffix)
  local stored_at, age, fresh, swr, sie, flags = string.match(meta or '',
    '^6;([^;]*);([^;]*);([^;]*);([^;]*);([^;]*);([^;]*);')
  stored_at, age, fresh = tonumber(stored_at), tonumber(age), tonumber(fresh)
  if stored_at and age and fresh and (response[2] == 0 or response[2] > now) then
    marked = marked + 1
    local current = age + math.max(0, now - stored_at)
    if fresh > current then
      -- To the millisecond below: never fresh a moment longer.
      local head, tail = string.match(meta, '^(6;[^;]*;[^;]*;)[^;]*(;.*)$')
      local until_now = string.format('%.3f', math.floor(current * 1000) / 1000)
      redis.call('HSET', KEYS[1], 'v' .. suffix, head .. until_now .. tail)
    end
    local stale = 0
    if not string.find(flags, 'r', 1, true) then
      stale = math.max(tonumber(swr) or 0, tonumber(sie) or 0, grace)
    end
    if string.find(flags, 'v', 1, true) then stale = math.max(stale, keep) end
    if stale > 0 then
      local expires = math.ceil(now + stale)
      if response[2] > 0 then expires = math.min(expires, response[2]) end
      longest = math.max(longest, expires)
      kept[#kept + 1] = string.sub(suffix, 2) .. ':' .. expires
    elseif suffix ~= '' then
      redis.call('HDEL', KEYS[1], fields(suffix))
    end
  end
end
if marked > 0 then
  if longest == 0 then
    redis.call('DEL', KEYS[1])
  else
    if record and record[2] then redis.call('HSET', KEYS[1], 'x', table.concat(kept, ' ')) end
    local left = redis.call('TTL', KEYS[1])
    if left < 0 or left > longest - now then
      redis.call('EXPIRE', KEYS[1], math.max(1, math.ceil(longest - now)))
    end
  end
end
redis.call('PUBLISH', ARGV[1], KEYS[1])
return marked
"""
)

# Index upkeep, shared by SAVE and the cluster's index scripts: zadd adds to a
# sorted set, replacing a key of another type (never one of ours), and fails
# the step on any other refusal (out of memory: deleting the index first would
# lose what it lists, and let the step write on); tag adds an entry's digest to
# a tag index, clears it of expired members and registers it.
_INDEX = """
local function zadd(key, ...)
  local done = redis.pcall('ZADD', key, ...)
  if type(done) == 'table' and done.err then
    if string.find(done.err, 'WRONGTYPE', 1, true) then redis.call('DEL', key) end
    redis.call('ZADD', key, ...)
  end
end
local function tag(index, digest, expires, now)
  zadd(index, expires, digest)
  redis.call('ZREMRANGEBYSCORE', index, '-inf', '(' .. now)
end
"""

# KEYS[1]: a URL bucket, KEYS[2]: the URL bucket registry, KEYS[3]: the tag
# registry. ARGV[1]: the bucket's member for the entry, ARGV[2]: when the bucket
# can go, ARGV[3]: the bucket's registry member, ARGV[4]: when the entry
# expires, then the digests of its tags.
INDEX_URL = (
    _INDEX
    + """
zadd(KEYS[1], 0, ARGV[1])
zadd(KEYS[2], 'NX', ARGV[2], ARGV[3])
for i = 5, #ARGV do zadd(KEYS[3], 'GT', ARGV[4], ARGV[i]) end
return 1
"""
)

# KEYS[1]: a tag index. ARGV[1]: the entry's digest, ARGV[2]: when it expires,
# ARGV[3]: the time now.
INDEX_TAG = (
    _INDEX
    + """
tag(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
return 1
"""
)

# KEYS[1]: the key, KEYS[2]: the lock the saver may hold, then (unless the
# caller keeps the indexes itself, on Redis Cluster) KEYS[3]: the URL bucket,
# KEYS[4]: the URL bucket registry, KEYS[5]: the tag registry and KEYS[6…]: tag
# indexes. ARGV: [1] ttl, [2] the time now, [3] the invalidation channel, [4]
# '1' if the lookup found something under the key (which the save replaces,
# and says so on the channel), [5] the variant ('' for a response without Vary
# names or key material), [6] the Vary names, [7] the most variants to keep,
# [8] the URL, [9] the tags, [10] the URL bucket's member, [11] when the bucket
# can go, [12] its registry member, [13] the key's digest, then the response's
# fields and values. A variant joins the others of its Vary record (a record of
# other names is replaced) and the one expiring first (of those, the one stored
# first: the record lists them in the order stored) goes when there are too
# many. Writes nothing (and returns 0) for a ttl that is not a whole number of
# seconds from 1 to 2^32, so that no key is ever left without an expiry.
SAVE = (
    _RESPONSES
    + _INDEX
    + """
local ttl = tonumber(ARGV[1])
if ttl == nil or ttl < 1 or ttl > 4294967296 or ttl ~= math.floor(ttl) then return 0 end
local now = tonumber(ARGV[2])
local expires = math.ceil(now + ttl)
if #KEYS > 2 then
  zadd(KEYS[3], 0, ARGV[10])
  zadd(KEYS[4], 'NX', ARGV[11], ARGV[12])
  for i = 6, #KEYS do
    tag(KEYS[i], ARGV[13], now + ttl, now)
    zadd(KEYS[5], 'GT', now + ttl, string.match(KEYS[i], '{(%x+)}$'))
  end
end
local values = {}
for i = 14, #ARGV do values[#values + 1] = ARGV[i] end
local replacing = ARGV[4] == '1'
local variant = ARGV[5]
if variant == '' then
  if replacing then redis.call('DEL', KEYS[1], KEYS[2]) else redis.call('DEL', KEYS[2]) end
  if ARGV[9] ~= '' then
    redis.call('HSET', KEYS[1], 'u', ARGV[8], 't', ARGV[9], unpack(values))
  else
    redis.call('HSET', KEYS[1], 'u', ARGV[8], unpack(values))
  end
  redis.call('EXPIRE', KEYS[1], ttl)
  if replacing then redis.call('PUBLISH', ARGV[3], KEYS[1]) end
  return 1
end
local record = redis.pcall('HMGET', KEYS[1], 'y', 't', 'x')
local live, tags = {}, {}
if record.err or record[1] ~= ARGV[6] then
  -- Another record (or none, or what is not one): a new one replaces it.
  if redis.call('DEL', KEYS[1]) > 0 then replacing = true end
  redis.call('DEL', KEYS[2])
else
  redis.call('DEL', KEYS[2])
  for name in string.gmatch(record[2] or '', '%S+') do tags[name] = true end
  local gone, oldest = {}, nil
  for other, until_ in string.gmatch(record[3] or '', '(%x+):(%d+)') do
    until_ = tonumber(until_)
    if other == variant or until_ <= now then
      gone[#gone + 1] = other
    else
      live[#live + 1] = {other, until_}
      if oldest == nil or until_ < live[oldest][2] then oldest = #live end
    end
  end
  if #live >= tonumber(ARGV[7]) then
    gone[#gone + 1] = live[oldest][1]
    table.remove(live, oldest)
  end
  local names = {}
  for _, other in ipairs(gone) do
    for _, name in ipairs({fields(':' .. other)}) do names[#names + 1] = name end
  end
  if #names > 0 then redis.call('HDEL', KEYS[1], unpack(names)) end
end
for name in string.gmatch(ARGV[9], '%S+') do tags[name] = true end
local x, longest = {}, expires
for _, other in ipairs(live) do
  x[#x + 1] = other[1] .. ':' .. other[2]
  longest = math.max(longest, other[2])
end
x[#x + 1] = variant .. ':' .. expires
local tag_list = {}
for name in pairs(tags) do tag_list[#tag_list + 1] = name end
table.sort(tag_list)
values[#values + 1] = 'y'
values[#values + 1] = ARGV[6]
values[#values + 1] = 'x'
values[#values + 1] = table.concat(x, ' ')
values[#values + 1] = 'u'
values[#values + 1] = ARGV[8]
if #tag_list > 0 then
  values[#values + 1] = 't'
  values[#values + 1] = table.concat(tag_list, ' ')
end
redis.call('HSET', KEYS[1], unpack(values))
redis.call('EXPIRE', KEYS[1], math.ceil(longest - now))
if replacing then redis.call('PUBLISH', ARGV[3], KEYS[1]) end
return 1
"""
)

# KEYS[1]: the tag registry. ARGV: the time now, then tags' digests whose
# indexes the sweep cleared. Unregisters those still due (a store since may have
# given one a later expiry).
UNREGISTER = """
local now = tonumber(ARGV[1])
for i = 2, #ARGV do
  local due = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[i]))
  if due and due <= now then redis.call('ZREM', KEYS[1], ARGV[i]) end
end
return 1
"""

# KEYS[1]: the URL bucket registry, KEYS[2…]: URL buckets. ARGV: their members in
# the registry. Unregisters the buckets a purge left empty (a save that adds to
# one registers it again, in the same step).
UNREGISTER_EMPTY = """
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then redis.call('ZREM', KEYS[1], ARGV[i - 1]) end
end
return 1
"""

# KEYS[1]: a tag index. ARGV: pairs of a member and its score as the sweep read
# it. Removes the members still scored so (a store since gives its entry a new
# expiry, and keeps it listed); how many went.
FORGET = """
local removed = 0
for i = 1, #ARGV, 2 do
  -- As numbers: servers spell a score in more than one way.
  local score = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[i]))
  if score and score == tonumber(ARGV[i + 1]) then
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return removed
"""

# KEYS[1]: the sweep's claim. ARGV[1]: a process's token, ARGV[2]: for how long
# (ms). Whether that process may sweep now: the claim was free or its own.
CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
    or redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# No keys (it runs on one node: on a cluster, each master's own keys). ARGV[1]:
# a SCAN cursor, ARGV[2]: the pattern of this cache's keys, ARGV[3]: how many
# keys to look at, ARGV[4]: what to match ('tag', 'prefix' or 'all'), ARGV[5]:
# the tag or the URL prefix. The next cursor, then the keys whose stored
# response is of that tag or under that prefix (for purges where Redis may
# have evicted an index).
SCAN = """
local found = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
local kind, value = ARGV[4], ARGV[5]
local chosen = {}
for _, key in ipairs(found[2]) do
  local fields = redis.pcall('HMGET', key, 'u', 't')
  local url = not fields.err and fields[1]
  if url then
    local match = kind == 'all'
    if kind == 'prefix' then
      match = string.sub(url, 1, #value) == value
    elseif kind == 'tag' then
      for tag in string.gmatch(fields[2] or '', '%S+') do
        if tag == value then match = true end
      end
    end
    if match then chosen[#chosen + 1] = key end
  end
end
return {found[1], chosen}
"""
