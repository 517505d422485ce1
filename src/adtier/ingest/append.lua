-- Append one validated batch to the event stream, atomically with its dedup and idempotency
-- bookkeeping, so a crash can never leave ids marked "seen" for events that were not buffered.
--
-- KEYS: 1 stream, 2 dedup set (today), 3 dedup set (yesterday), 4 buffered-events counter,
--       5 idempotency key ('' when none), 6 batch record key ('' for pixels)
-- ARGV: 1 packed 16-byte event ids (ad events first, then content events),
--       2 high-water mark (buffered events), 3 dedup set TTL (s), 4 batch record TTL (s),
--       5 batch id, 6 meta, 7 ad rows, 8 content rows, 9 rejected rows
-- Returns {'ok', bitmap, duplicates} | {'replay', batch_id} | {'full', buffered}
--
-- Dedup costs two set operations per event inside one script call, not a network round trip
-- per event: ids of today's and yesterday's sets, so the window is between 24 and 48 hours.
if KEYS[5] ~= '' then
  local first = redis.call('GET', KEYS[5])
  if first then return {'replay', first} end
end
local buffered = tonumber(redis.call('GET', KEYS[4]) or '0')
local high = tonumber(ARGV[2])
if high > 0 and buffered >= high then return {'full', tostring(buffered)} end

local ids = ARGV[1]
local n = #ids / 16
local check_prev = redis.call('EXISTS', KEYS[3]) == 1
local marks = {}
local dups = 0
for i = 1, n do
  local id = string.sub(ids, i * 16 - 15, i * 16)
  if (check_prev and redis.call('SISMEMBER', KEYS[3], id) == 1)
      or redis.call('SADD', KEYS[2], id) == 0 then
    marks[i] = '1'
    dups = dups + 1
  else
    marks[i] = '0'
  end
end
local bitmap = table.concat(marks)
if n > 0 then redis.call('EXPIRE', KEYS[2], ARGV[3]) end

redis.call('XADD', KEYS[1], '*', 'b', ARGV[5], 'm', ARGV[6], 'a', ARGV[7], 'c', ARGV[8],
  'r', ARGV[9], 'd', bitmap)
redis.call('INCRBY', KEYS[4], n - dups)
if KEYS[6] ~= '' then
  redis.call('HSET', KEYS[6], 'm', ARGV[6], 'd', bitmap, 's', 'buffered')
  redis.call('EXPIRE', KEYS[6], ARGV[4])
end
if KEYS[5] ~= '' then
  redis.call('SET', KEYS[5], ARGV[5], 'EX', ARGV[4])
end
return {'ok', bitmap, dups}
