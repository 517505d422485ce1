-- Dense profile ordinals (ingest/ordinals.py): the ordinal of every key in ARGV, giving the next
-- one to a key seen for the first time. Atomic, so two flushers never give one ordinal twice.
-- KEYS[1] = hash: 16-byte profile key -> ordinal; KEYS[2] = the last ordinal given.
-- A missing counter means the map was never loaded from ClickHouse (a new or emptied Valkey):
-- answer NOTLOADED rather than start again at 1 and reuse ordinals.
local last = redis.call('GET', KEYS[2])
if not last then
    return redis.error_reply('NOTLOADED profile ordinals are not loaded')
end
last = tonumber(last)
local out, new, given = {}, {}, {}
for i = 1, #ARGV do
    local key = ARGV[i]
    local ord = given[key] or redis.call('HGET', KEYS[1], key)
    if not ord then
        last = last + 1
        ord = last
        given[key] = ord
        new[#new + 1] = key
        new[#new + 1] = ord
    end
    out[i] = tonumber(ord)
end
-- Few large writes instead of two per key: each write command is also an AOF record.
-- (unpack is bounded by Lua's stack, hence slices of 1,000 pairs.)
for first = 1, #new, 2000 do
    redis.call('HSET', KEYS[1], unpack(new, first, math.min(first + 1999, #new)))
end
if #new > 0 then
    redis.call('SET', KEYS[2], last)
end
return out
