-- link_retry: link a task to the task that retries it, once.
--
-- KEYS: 1 the task's hash.
-- ARGV: 1 the new task's id.
-- Returns the id it was linked to before (then nothing changes), or '' (then
--   `retried_as` is set).
local existing = redis.call('HGET', KEYS[1], 'retried_as')
if existing then return existing end
redis.call('HSET', KEYS[1], 'retried_as', ARGV[1])
return ''
