-- Take over a dead flusher's plan, all or nothing.
-- KEYS: 1 stream, 2 owner's plan key, 3 my plan key
-- ARGV: 1 group, 2 my consumer name, 3 owner's consumer name, 4 min idle ms
-- Returns the plan ('' when the owner has none), or false when the owner is still alive
-- (some entry was not idle long enough) or I have an unfinished plan of my own.
local plan = redis.call('GET', KEYS[2])
if not plan then return '' end
if redis.call('EXISTS', KEYS[3]) == 1 then return false end
local ids = {}
for id in string.gmatch(plan, '[^,]+') do ids[#ids + 1] = id end
local claimed = {}
for first = 1, #ids, 2000 do
  local got = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[4],
    unpack(ids, first, math.min(first + 1999, #ids)))
  for _, entry in ipairs(got) do claimed[#claimed + 1] = entry[1] end
end
if #claimed < #ids then
  -- the owner is alive (or the plan is stale): hand back what was taken, keep nothing
  for first = 1, #claimed, 2000 do
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0,
      unpack(claimed, first, math.min(first + 1999, #claimed)), 'JUSTID')
  end
  return false
end
redis.call('SET', KEYS[3], plan)
redis.call('DEL', KEYS[2])
return plan
