-- refresh: keep a running task's claim fresh (see claim.lua).
--
-- KEYS: 1 the task's hash.
-- ARGV: 1 the claim token of the delivery running it, 2 now.
-- Writes `claimed_at` only while that token holds the claim. Returns 0.
if redis.call('HGET', KEYS[1], 'claimed_by') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'claimed_at', ARGV[2])
end
return 0
