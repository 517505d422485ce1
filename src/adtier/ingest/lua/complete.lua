-- After a successful insert: acknowledge and delete the entries, count down the buffered
-- events of only those this call acknowledged (a second completion changes nothing), mark
-- their batches stored, and drop my plan if it is still this plan.
-- KEYS: 1 stream, 2 buffered counter, 3 my plan key
-- ARGV: 1 group, 2 plan value, then triples (entry id, stored events, batch record key or '')
local acked = 0
for i = 3, #ARGV, 3 do
  local id = ARGV[i]
  if redis.call('XACK', KEYS[1], ARGV[1], id) == 1 then
    acked = acked + tonumber(ARGV[i + 1])
    redis.call('XDEL', KEYS[1], id)
    local record = ARGV[i + 2]
    if record ~= '' and redis.call('EXISTS', record) == 1 then
      redis.call('HSET', record, 's', 'stored')
    end
  end
end
if acked > 0 then redis.call('DECRBY', KEYS[2], acked) end
if redis.call('GET', KEYS[3]) == ARGV[2] then redis.call('DEL', KEYS[3]) end
return acked
