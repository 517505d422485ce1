-- Append one validated batch to the event stream, atomically with its dedup and idempotency
-- bookkeeping, so a crash can never leave ids marked "seen" for events that were not buffered.
--
-- KEYS: 1 stream, 2 buffered-events counter, 3 idempotency key ('' when none),
--       4 batch record key ('' for pixels)
-- ARGV: 1 packed 16-byte event ids (ad events first, then content events),
--       2 high-water mark (buffered events), 3 dedup set TTL (s), 4 batch record TTL (s),
--       5 batch id, 6 meta, 7 ad rows, 8 content rows, 9 rejected rows,
--       10 dedup set prefix, 11 days of earlier sets to check
-- Returns {'ok', bitmap, duplicates} | {'replay', batch_id} | {'full', buffered}
--
-- Dedup: one id set per day, the day taken from this server's clock (one clock for every
-- ingest node, so a retry landing on a node with a skewed clock still finds its first copy).
-- Today's set and the previous N are checked, so the window is between N and N+1 days; bulk
-- set commands inside this one call mean no round trip, and no command, per event.
-- (The day-set names are built here, so this script assumes a single Valkey, not a cluster.)
if KEYS[3] ~= '' then
  local first = redis.call('GET', KEYS[3])
  if first then return {'replay', first} end
end
local buffered = tonumber(redis.call('GET', KEYS[2]) or '0')
local high = tonumber(ARGV[2])
if high > 0 and buffered >= high then return {'full', tostring(buffered)} end

local ids = ARGV[1]
local n = #ids / 16
local list = {}
for i = 1, n do list[i] = string.sub(ids, i * 16 - 15, i * 16) end
local day = math.floor(tonumber(redis.call('TIME')[1]) / 86400)
local today = ARGV[10] .. day
local sets = {today}
for back = 1, tonumber(ARGV[11]) do
  local key = ARGV[10] .. (day - back)
  if redis.call('EXISTS', key) == 1 then sets[#sets + 1] = key end
end
local marks = {}
local fresh = {}
local in_batch = {}
local dups = 0
local CHUNK = 2000  -- unpack has a stack limit
for first = 1, n, CHUNK do
  local last = math.min(first + CHUNK - 1, n)
  local seen = {}
  for s = 1, #sets do seen[s] = redis.call('SMISMEMBER', sets[s], unpack(list, first, last)) end
  for i = first, last do
    local id = list[i]
    local j = i - first + 1
    local dup = in_batch[id] or false
    for s = 1, #sets do dup = dup or seen[s][j] == 1 end
    if dup then
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
  redis.call('SADD', today, unpack(fresh, first, math.min(first + CHUNK - 1, #fresh)))
end
local bitmap = table.concat(marks)
if #fresh > 0 then redis.call('EXPIRE', today, ARGV[3]) end

redis.call('XADD', KEYS[1], '*', 'b', ARGV[5], 'm', ARGV[6], 'a', ARGV[7], 'c', ARGV[8],
  'r', ARGV[9], 'd', bitmap)
redis.call('INCRBY', KEYS[2], n - dups)
if KEYS[4] ~= '' then
  redis.call('HSET', KEYS[4], 'm', ARGV[6], 'd', bitmap, 's', 'buffered')
  redis.call('EXPIRE', KEYS[4], ARGV[4])
end
if KEYS[3] ~= '' then
  redis.call('SET', KEYS[3], ARGV[5], 'EX', ARGV[4])
end
return {'ok', bitmap, dups}
