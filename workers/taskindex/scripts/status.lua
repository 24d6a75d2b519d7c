-- status: a task's record and, unless its state is one of ARGV, Celery's result meta, in
-- one call (a failure's record has all it needs; its meta would repeat the traceback).
--
-- KEYS: 1 the task's hash, 2 Celery's result key of the task.
-- ARGV: the states whose meta is not read.
-- Returns {the record as a flat field/value list (empty when there is none), the meta or
--   false}.
local record = redis.call('HGETALL', KEYS[1])
local meta = false
if #record > 0 then
  local state = redis.call('HGET', KEYS[1], 'state')
  local skip = false
  for i = 1, #ARGV do if ARGV[i] == state then skip = true end end
  if not skip then meta = redis.call('GET', KEYS[2]) end
end
return {record, meta}
