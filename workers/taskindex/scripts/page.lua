-- page: one page of an index, newest first, with fields of each task's record, in one call.
--
-- KEYS: 1 the index (a sorted set of task ids scored by `seq`).
-- ARGV: 1 the upper score bound (as for ZREVRANGEBYSCORE: '+inf', '(<seq>'), 2 the most
--   tasks, then the names of the fields to read.
-- Returns flat (id, score, {the fields' values}) triples; the values are all nil for a task
--   whose record was pruned while its index entry stayed.
--
-- Keys built here, not passed in KEYS: the hash of each task on the page (the header's
-- task_key), which is only known once KEYS[1] is read here.
local batch = redis.call('ZREVRANGEBYSCORE', KEYS[1], ARGV[1], '-inf', 'WITHSCORES',
  'LIMIT', 0, tonumber(ARGV[2]))
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
local out = {}
for i = 1, #batch, 2 do
  out[#out + 1] = batch[i]
  out[#out + 1] = batch[i + 1]
  out[#out + 1] = redis.call('HMGET', task_key(batch[i]), unpack(fields))
end
return out
