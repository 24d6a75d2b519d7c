-- store_result: store a task's result meta the way Celery's Redis backend does (SET with
-- its expiry, PUBLISH on the key for waiting clients; never over a SUCCESS) and apply the
-- state to the task's record in the same call.
--
-- Calls: record (record.lua).
-- KEYS: 1 Celery's result key of the task, 2-8 record's KEYS (2: the task's hash).
-- ARGV: 1 the meta (JSON), 2 seconds to keep it (0: no expiry), 3.. record's ARGV.
-- Returns record's reply, or {-1} when a SUCCESS was stored already (then nothing changes).
local current = redis.call('GET', KEYS[1])
if current then
  local ok, meta = pcall(cjson.decode, current)
  if ok and type(meta) == 'table' and meta['status'] == 'SUCCESS' then return {-1} end
end
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
local rkeys, rargs = {}, {}
for i = 2, #KEYS do rkeys[i - 1] = KEYS[i] end
for i = 3, #ARGV do rargs[i - 2] = ARGV[i] end
return record(rkeys, rargs)
