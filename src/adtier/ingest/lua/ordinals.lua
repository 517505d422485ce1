-- Dense profile ordinals (store/ordinals.py): the ordinal of every key in ARGV, giving the next
-- one to a key seen for the first time. Atomic, so two flushers never give one ordinal twice.
-- KEYS[1] = hash: 16-byte profile key -> ordinal; KEYS[2] = the last ordinal given.
-- A missing counter means the map was never loaded from ClickHouse (a new or emptied Valkey):
-- answer NOTLOADED rather than start again at 1 and reuse ordinals.
if redis.call('EXISTS', KEYS[2]) == 0 then
    return redis.error_reply('NOTLOADED profile ordinals are not loaded')
end
local out = {}
for i = 1, #ARGV do
    local ord = redis.call('HGET', KEYS[1], ARGV[i])
    if not ord then
        ord = redis.call('INCR', KEYS[2])
        redis.call('HSET', KEYS[1], ARGV[i], ord)
    end
    out[i] = tonumber(ord)
end
return out
