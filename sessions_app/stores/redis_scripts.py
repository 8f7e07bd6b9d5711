"""Lua scripts that make each multi-key step on one session atomic (all keys share a hash tag)."""

from core.redis_clients import Lua
from sessions_app.ports import KEYED_WRITES_KEPT

# `q` is the seq the next appended message gets; a session stored before seqs existed has none
# (read as its count `n`: nothing deleted was tracked, each message's position was its seq).
META_FIELDS = ("o", "s", "md", "sp", "mt", "ca", "la", "n", "ti", "to", "q")
_HMGET_META = "redis.call('HMGET', KEYS[1], 'o', 's', 'md', 'sp', 'mt', 'ca', 'la', 'n', 'ti', 'to', 'q')"

# A keyed write is `key until_ms record` (see APPEND_TURN). `keyed_record(list key, key id, now_ms)`
# is the record of the newest one for that key still within its lifetime, or nil.
_KEYED_RECORD = """
local function keyed_record(list, key, now)
  local prefix = key .. ' '
  for _, entry in ipairs(redis.call('LRANGE', list, 0, -1)) do
    if string.sub(entry, 1, #prefix) == prefix then
      local space = string.find(entry, ' ', #prefix + 1, true)
      if tonumber(string.sub(entry, #prefix + 1, space - 1)) > tonumber(now) then
        return string.sub(entry, space + 1)
      end
    end
  end
  return nil
end
"""

# KEYS: meta, messages, lock, deleted, keyed. ARGV: owner, token, lock_ms, history_limit, key id
# ('' for none), now_ms. A write the session holds for the key, still within its lifetime, is
# answered instead of taking the lock.
BEGIN_TURN = Lua(f"""{_KEYED_RECORD}
local meta = {_HMGET_META}
if meta[1] ~= ARGV[1] then return {{'not_found'}} end
if ARGV[5] ~= '' then
  local record = keyed_record(KEYS[5], ARGV[5], ARGV[6])
  if record then return {{'answered', meta, record}} end
end
if meta[2] ~= 'active' then return {{'not_active'}} end
if not redis.call('SET', KEYS[3], ARGV[2], 'NX', 'PX', ARGV[3]) then return {{'busy'}} end
local limit = tonumber(ARGV[4])
local messages = {{}}
if limit > 0 then messages = redis.call('LRANGE', KEYS[2], -limit, -1) end
return {{'ok', meta, messages}}
""")

# KEYS: meta, messages, lock, deleted, keyed, then a side write's keys. ARGV: token, ttl_seconds,
# at_ms, input_tokens, output_tokens, keyed write ('' for none), the side write's word count, its
# words (each command: its word count, then its words), message...
# Each message (a JSON array without its seq) is stored with the next seq written before its `]`.
# A retry after a lost reply finds its own last message already there and succeeds again. A keyed
# write goes on the front of the session's list of them, the newest KEYED_WRITES_KEPT kept. The
# side write's commands run last, on every `ok` (another app's writes: `ports.SideWrite`).
APPEND_TURN = Lua(f"""
local first = 8 + tonumber(ARGV[7])
local function side_write()
  local i = 8
  while i < first do
    local n = tonumber(ARGV[i])
    redis.call(unpack(ARGV, i + 1, i + n))
    i = i + n + 1
  end
end
if redis.call('GET', KEYS[3]) ~= ARGV[1] then
  if redis.call('EXISTS', KEYS[1]) == 0 then return {{'not_found'}} end
  local last, sent = redis.call('LINDEX', KEYS[2], -1), ARGV[#ARGV]
  if last and string.sub(last, 1, #sent) == string.sub(sent, 1, -2) .. ',' then
    side_write()
    return {{'ok', {_HMGET_META}}}
  end
  return {{'lost'}}
end
local seq = tonumber(redis.call('HGET', KEYS[1], 'q')) or redis.call('LLEN', KEYS[2])
for i = first, #ARGV do
  redis.call('RPUSH', KEYS[2], string.sub(ARGV[i], 1, -2) .. ',' .. seq .. ']')
  seq = seq + 1
end
if ARGV[6] ~= '' then
  redis.call('LPUSH', KEYS[5], ARGV[6])
  redis.call('LTRIM', KEYS[5], 0, {KEYED_WRITES_KEPT - 1})
  redis.call('EXPIRE', KEYS[5], ARGV[2])
end
redis.call('HSET', KEYS[1], 'la', ARGV[3], 'q', seq)
redis.call('HINCRBY', KEYS[1], 'n', #ARGV - first + 1)
redis.call('HINCRBY', KEYS[1], 'ti', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'to', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[3])
side_write()
return {{'ok', {_HMGET_META}}}
""")

# KEYS: meta, keyed. ARGV: owner, key id, now_ms. The record BEGIN_TURN would answer, or nil.
KEYED_WRITE = Lua(f"""{_KEYED_RECORD}
if redis.call('HGET', KEYS[1], 'o') ~= ARGV[1] then return nil end
return keyed_record(KEYS[2], ARGV[2], ARGV[3])
""")

# KEYS: lock. ARGV: token, lock_ms.
EXTEND_TURN = Lua("""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
""")

# KEYS: lock. ARGV: token.
RELEASE_TURN = Lua("""
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""")

# KEYS: meta, lock. ARGV: owner, status, at_ms.
SET_STATUS = Lua(f"""
if redis.call('HGET', KEYS[1], 'o') ~= ARGV[1] then return {{'not_found'}} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {{'busy'}} end
redis.call('HSET', KEYS[1], 's', ARGV[2], 'la', ARGV[3])
return {{'ok', {_HMGET_META}}}
""")

# KEYS: meta. ARGV: owner, metadata as JSON, at_ms.
SET_METADATA = Lua(f"""
if redis.call('HGET', KEYS[1], 'o') ~= ARGV[1] then return {{'not_found'}} end
redis.call('HSET', KEYS[1], 'mt', ARGV[2], 'la', ARGV[3])
return {{'ok', {_HMGET_META}}}
""")

# KEYS: meta, messages, lock, deleted. ARGV: owner, message id, at_ms, deleted ids kept. A message is
# a JSON array, its id first, its seq last (a number, where every other field after the first three
# is a string). Messages stored before seqs existed (the oldest ones, each at its seq) are first
# written with their position as seq, so the deletion shifts no seq. The one found is overwritten
# with a marker no message can be (not JSON) and the marker removed; `seq:id` goes on the front of
# the deleted list (the newest kept, expiring with the meta hash).
DELETE_MESSAGE = Lua(f"""
if redis.call('HGET', KEYS[1], 'o') ~= ARGV[1] then return {{'not_found'}} end
if redis.call('EXISTS', KEYS[3]) == 1 then return {{'busy'}} end
local messages = redis.call('LRANGE', KEYS[2], 0, -1)
local found, seq, unsequenced = nil, nil, {{}}
for i, raw in ipairs(messages) do
  local fields = cjson.decode(raw)
  local last = fields[#fields]
  if type(last) ~= 'number' then unsequenced[#unsequenced + 1] = i; last = i - 1 end
  if fields[1] == ARGV[2] then found, seq = i, last end
end
if not found then return {{'no_message'}} end
redis.call('LPUSH', KEYS[4], string.format('%d', seq) .. ':' .. ARGV[2])
redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[4]) - 1)
-- A millisecond less: PEXPIRE reads the clock again, up to a millisecond after PTTL did, and the
-- deleted ids must not outlive the session.
local ttl = redis.call('PTTL', KEYS[1]) - 1
if ttl > 0 then redis.call('PEXPIRE', KEYS[4], ttl) end
for _, i in ipairs(unsequenced) do
  redis.call('LSET', KEYS[2], i - 1, string.sub(messages[i], 1, -2) .. ',' .. (i - 1) .. ']')
end
if not redis.call('HGET', KEYS[1], 'q') then redis.call('HSET', KEYS[1], 'q', #messages) end
redis.call('LSET', KEYS[2], found - 1, '\0deleted')
redis.call('LREM', KEYS[2], 1, '\0deleted')
redis.call('HINCRBY', KEYS[1], 'n', -1)
redis.call('HSET', KEYS[1], 'la', ARGV[3])
return {{'ok', {_HMGET_META}}}
""")

# KEYS: meta, messages. ARGV: owner, from_seq, limit (negative: no limit). The first message with a
# seq of at least from_seq sits at a position between from_seq - (messages deleted) and from_seq
# (seqs are distinct, rising, never below their position), so the range read covers it and the
# `limit` after it; the caller drops those before from_seq. Returns the first position read too.
LOAD_FROM = Lua(f"""
local meta = {_HMGET_META}
if meta[1] ~= ARGV[1] then return {{'not_found'}} end
local count = tonumber(meta[8])
local deleted = (tonumber(meta[11]) or count) - count
local from_seq, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
local first = math.max(0, from_seq - deleted)
local last = -1
if limit >= 0 then last = from_seq + limit - 1 end
return {{'ok', meta, first, redis.call('LRANGE', KEYS[2], first, last)}}
""")

# KEYS: meta, deleted. ARGV: owner, message id. The seq the deleted list holds for that id, or nil.
DELETED_SEQ = Lua("""
if redis.call('HGET', KEYS[1], 'o') ~= ARGV[1] then return false end
for _, entry in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  local colon = string.find(entry, ':', 1, true)
  if string.sub(entry, colon + 1) == ARGV[2] then return tonumber(string.sub(entry, 1, colon - 1)) end
end
return false
""")

# KEYS: meta, messages, lock. ARGV: token, lock_ms. Any status, any owner: for the archiver.
LOCK_FOR_ARCHIVE = Lua(f"""
local meta = {_HMGET_META}
if not meta[1] then return {{'not_found'}} end
if not redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) then return {{'busy'}} end
return {{'ok', meta, redis.call('LRANGE', KEYS[2], 0, -1)}}
""")

# KEYS: meta, messages, lock, deleted, keyed. ARGV: token. Returns {owner, created ms} of what it
# deleted. The deleted ids and keyed writes go too: an archived session keeps none (a page of it
# names a kept message).
DELETE_LOCKED = Lua("""
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return false end
local meta = redis.call('HMGET', KEYS[1], 'o', 'ca')
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
return meta
""")

# KEYS: meta, messages. ARGV: ttl_seconds, meta as JSON, message... Nothing if it exists already.
RESTORE = Lua("""
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local meta = cjson.decode(ARGV[2])
for field, value in pairs(meta) do redis.call('HSET', KEYS[1], field, value) end
for i = 3, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
redis.call('EXPIRE', KEYS[1], ARGV[1])
if #ARGV >= 3 then redis.call('EXPIRE', KEYS[2], ARGV[1]) end
return 1
""")

# KEYS: owner index. ARGV: limit, member, ttl_seconds. Idempotent for a member already there.
RESERVE_SLOT = Lua("""
if redis.call('ZSCORE', KEYS[1], ARGV[2]) then return 1 end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], 0, ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
""")

# KEYS: meta, messages, lock, deleted, keyed. ARGV: owner. Returns the creation time (ms) of what it
# deleted.
DELETE = Lua("""
local meta = redis.call('HMGET', KEYS[1], 'o', 'ca')
if meta[1] ~= ARGV[1] then return false end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
return meta[2]
""")
