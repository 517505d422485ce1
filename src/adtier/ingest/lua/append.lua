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
-- Dedup checks today's and yesterday's id sets (so the window is between 24 and 48 hours) with
-- bulk set commands inside this one call: no network round trip, and no command, per event.
if KEYS[5] ~= '' then
  local first = redis.call('GET', KEYS[5])
  if first then return {'replay', first} end
end
local buffered = tonumber(redis.call('GET', KEYS[4]) or '0')
local high = tonumber(ARGV[2])
if high > 0 and buffered >= high then return {'full', tostring(buffered)} end

local ids = ARGV[1]
local n = #ids / 16
local list = {}
for i = 1, n do list[i] = string.sub(ids, i * 16 - 15, i * 16) end
local check_prev = redis.call('EXISTS', KEYS[3]) == 1
local marks = {}
local fresh = {}
local in_batch = {}
local dups = 0
-- Bulk commands in chunks (unpack has a stack limit): one SMISMEMBER per set and one SADD,
-- instead of a command per id.
local CHUNK = 2000
for first = 1, n, CHUNK do
  local last = math.min(first + CHUNK - 1, n)
  local seen = redis.call('SMISMEMBER', KEYS[2], unpack(list, first, last))
  local seen_prev = check_prev and redis.call('SMISMEMBER', KEYS[3], unpack(list, first, last))
  for i = first, last do
    local id = list[i]
    local j = i - first + 1
    if seen[j] == 1 or (seen_prev and seen_prev[j] == 1) or in_batch[id] then
      marks[i] = '1'
      dups = dups + 1
    else
      marks[i] = '0'
      in_batch[id] = true
      fresh[#fresh + 1] = id
    end
  end
end
for first = 1, #fresh, CHUNK do
  redis.call('SADD', KEYS[2], unpack(fresh, first, math.min(first + CHUNK - 1, #fresh)))
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
