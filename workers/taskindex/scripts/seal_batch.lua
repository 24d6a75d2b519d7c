-- seal_batch: a batch's expansion is over (every item published, or it was cancelled):
-- `published` is final; announce the batch done if its items have all ended already.
--
-- Calls: batch_done (batch_done.lua).
-- KEYS: 1 the batch's hash. ARGV: 1 the batch id, 2 now.
-- Writes `sealed`. Returns batch_done's answer.
redis.call('HSET', KEYS[1], 'sealed', '1')
return batch_done(KEYS, ARGV)
