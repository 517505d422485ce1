-- Before (re)trying an insert: are all these entries still pending with me? If so, reset their
-- idle time so no other flusher takes them over while I work. Returns 1 or 0.
-- KEYS: 1 stream; ARGV: 1 group, 2 my consumer name, 3.. entry ids
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p == 0 or p[1][2] ~= ARGV[2] then return 0 end
end
for first = 3, #ARGV, 2000 do
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0,
    unpack(ARGV, first, math.min(first + 1999, #ARGV)), 'JUSTID')
end
return 1
