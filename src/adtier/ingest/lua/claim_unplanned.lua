-- Claim another consumer's idle pending entries that are not part of its current plan (a plan
-- moves only whole, through take_over.lua, so its token never changes).
-- KEYS: 1 stream, 2 owner's plan key; ARGV: 1 group, 2 my name, 3 min idle ms, 4.. entry ids
local planned = {}
local plan = redis.call('GET', KEYS[2])
if plan then
  for id in string.gmatch(plan, '[^,]+') do planned[id] = true end
end
local wanted = {}
for i = 4, #ARGV do
  if not planned[ARGV[i]] then wanted[#wanted + 1] = ARGV[i] end
end
local claimed = {}
for first = 1, #wanted, 2000 do
  local got = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3],
    unpack(wanted, first, math.min(first + 1999, #wanted)), 'JUSTID')
  for _, id in ipairs(got) do claimed[#claimed + 1] = id end
end
return claimed
