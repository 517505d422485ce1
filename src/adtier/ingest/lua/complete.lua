-- After a successful insert: acknowledge and delete the entries, count down the buffered
-- events of only those this call acknowledged (a second completion changes nothing), and drop
-- my plan if it is still this plan. (Batch records are marked stored before this, by the
-- flusher: a batch split over partitions has its record in one of them only.)
-- KEYS: 1 stream, 2 buffered counter, 3 my plan key (all of one partition)
-- ARGV: 1 group, 2 plan value, then pairs (entry id, stored events)
local acked = 0
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  if redis.call('XACK', KEYS[1], ARGV[1], id) == 1 then
    acked = acked + tonumber(ARGV[i + 1])
    redis.call('XDEL', KEYS[1], id)
  end
end
if acked > 0 then redis.call('DECRBY', KEYS[2], acked) end
if redis.call('GET', KEYS[3]) == ARGV[2] then redis.call('DEL', KEYS[3]) end
return acked
