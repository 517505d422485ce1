-- Remove an idle consumer only if it holds nothing (checked and done in one step).
-- KEYS: 1 stream, 2 the consumer's plan key (same partition); ARGV: 1 group, 2 consumer
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
