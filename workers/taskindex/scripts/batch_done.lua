-- batch_done: once a batch is sealed (all its items published) and as many items have
-- ended as were published, announce it, once: a `batch_done` entry in WEBHOOK_STREAM, which
-- a worker's dispatcher turns into `finish_batch` (workers/tasks/batches.py).
--
-- KEYS: 1 the batch's hash (batch_key).
-- ARGV: 1 the batch id, 2 now.
-- Writes `done_at` when it announces. Returns 1 when it did, else 0.
local r = redis.call('HMGET', KEYS[1], 'sealed', 'published', 'ended')
if r[1] ~= '1' or (tonumber(r[3]) or 0) < (tonumber(r[2]) or 0) then return 0 end
if redis.call('HSETNX', KEYS[1], 'done_at', ARGV[2]) == 0 then return 0 end
redis.call('XADD', WEBHOOK_STREAM, 'MAXLEN', '~', WEBHOOK_STREAM_MAXLEN, '*',
  'task_id', ARGV[1], 'event', 'batch_done', 'seq', 0)
return 1
