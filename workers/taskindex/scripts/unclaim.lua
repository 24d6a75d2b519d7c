-- unclaim: give up a claim this delivery made but will not run under (with
-- REDIS_REPLICA_ACKS, no replica acknowledged it in time: a failover could lose it, and a
-- second delivery of the message would then run the task too). The next delivery claims
-- at once instead of waiting for this claim to go stale.
--
-- KEYS: 1 the task's hash.
-- ARGV: 1 the claim token of the delivery giving it up.
-- Writes `claimed` 0, `claimed_by` empty and one delivery less, only while that token
--   holds the claim. Returns 1 when it did, else 0.
if redis.call('HGET', KEYS[1], 'claimed_by') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'claimed', '0', 'claimed_by', '')
redis.call('HINCRBY', KEYS[1], 'deliveries', -1)
return 1
