-- Append one validated batch (or the part of it routed to this partition) to the partition's
-- event stream, atomically with its dedup and idempotency bookkeeping, so a crash can never
-- leave ids marked "seen" for events that were not buffered.
--
-- Every key is declared and shares the partition's hash tag (one slot on a cluster).
-- KEYS: 1 stream, 2 buffered-events counter, 3 idempotency key, 4 batch record key,
--       5.. dedup day-sets for consecutive days, the first one for day ARGV[10]
--       (KEYS[3] and KEYS[4] are only used when ARGV[12] / ARGV[13] say so)
-- ARGV: 1 packed 16-byte event ids (ad events first, then content events),
--       2 high-water mark (buffered events), 3 dedup set TTL (s), 4 batch record TTL (s),
--       5 batch id, 6 meta, 7 ad rows, 8 content rows, 9 rejected rows,
--       10 day number of KEYS[5], 11 days of earlier sets to check, 12 '1': check/set the
--       idempotency key, 13 '1': keep the batch record, 14 the whole batch's duplicate marks
--       with '?' where this call's marks go ('' = this call is the whole batch), 15 parts,
--       16 the whole batch's meta for its record ('' = ARGV[6])
-- Returns {'ok', bitmap, duplicates} | {'replay', batch_id} | {'full', buffered}
--       | {'clock', day} (the day-sets passed do not cover this server's day: pass them again)
--
-- Dedup: one id set per day, the day taken from this server's clock (one clock for every
-- ingest node, so a retry landing on a node with a skewed clock still finds its first copy).
-- Today's set and the previous N are checked, so the window is between N and N+1 days; bulk
-- set commands inside this one call mean no round trip, and no command, per event.
local day = math.floor(tonumber(redis.call('TIME')[1]) / 86400)
local back = tonumber(ARGV[11])
local today_at = 5 + day - tonumber(ARGV[10])
if today_at - back < 5 or today_at > #KEYS then return {'clock', tostring(day)} end

if ARGV[12] == '1' then
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
local today = KEYS[today_at]
local earlier = {}
for k = today_at - back, today_at - 1 do
  if redis.call('EXISTS', KEYS[k]) == 1 then earlier[#earlier + 1] = KEYS[k] end
end
-- Per chunk: which ids today's set holds, then the whole chunk added to it. When SADD adds
-- every id (the usual batch: all new, all distinct) and no earlier day's set holds one, the
-- chunk's marks are one string.rep, with no Lua table filled per id; otherwise they are
-- worked out id by id. An id of an earlier day's set is a duplicate either way (it is added
-- to today's set too, where a later copy is one as well).
local pieces = {}
local dups = 0
local added_any = false
local CHUNK = 2000  -- unpack has a stack limit
for first = 1, n, CHUNK do
  local last = math.min(first + CHUNK - 1, n)
  local size = last - first + 1
  local seen = redis.call('SMISMEMBER', today, unpack(list, first, last))
  local added = redis.call('SADD', today, unpack(list, first, last))
  if added > 0 then added_any = true end
  local olds = {}
  local old_hit = false
  for s = 1, #earlier do
    local old = redis.call('SMISMEMBER', earlier[s], unpack(list, first, last))
    for j = 1, size do
      if old[j] == 1 then old_hit = true break end
    end
    olds[#olds + 1] = old
  end
  if added == size and not old_hit then
    pieces[#pieces + 1] = string.rep('0', size)
  else
    local chunk = {}
    local in_chunk = {}
    for j = 1, size do
      local id = list[first + j - 1]
      local dup = seen[j] == 1 or in_chunk[id] or false
      for s = 1, #olds do dup = dup or olds[s][j] == 1 end
      if dup then
        chunk[j] = '1'
        dups = dups + 1
      else
        chunk[j] = '0'
        in_chunk[id] = true
      end
    end
    pieces[#pieces + 1] = table.concat(chunk)
  end
end
local bitmap = table.concat(pieces)
if added_any then redis.call('EXPIRE', today, ARGV[3]) end

redis.call('XADD', KEYS[1], '*', 'b', ARGV[5], 'm', ARGV[6], 'a', ARGV[7], 'c', ARGV[8],
  'r', ARGV[9], 'd', bitmap)
redis.call('INCRBY', KEYS[2], n - dups)
if ARGV[13] == '1' then
  local whole = bitmap
  if ARGV[14] ~= '' then
    local k = 0
    whole = string.gsub(ARGV[14], '%?', function() k = k + 1; return string.sub(bitmap, k, k) end)
  end
  local meta = ARGV[16]
  if meta == '' then meta = ARGV[6] end
  redis.call('HSET', KEYS[4], 'm', meta, 'd', whole, 's', 'buffered', 'n', ARGV[15])
  redis.call('EXPIRE', KEYS[4], ARGV[4])
end
if ARGV[12] == '1' then
  redis.call('SET', KEYS[3], ARGV[5], 'EX', ARGV[4])
end
return {'ok', bitmap, dups}
