-- publish: record a new task and put its message on its queue in one step. No message
-- exists without its record, and a refusal (Redis out of memory: only a script's first
-- write can be refused) takes neither.
--
-- Calls: record (record.lua).
-- KEYS: 1-7 record's KEYS, then the keys of kombu's commands (the queue's priority list,
--   the lists an expiring queue refreshes), in the order the commands name them.
-- ARGV: 1 n, the number of record's ARGV, 2..n+1 record's ARGV, then (command, target,
--   value) triples as kombu would run them: `lpush` the message and `pexpire` a list (the
--   target: the position of its key in KEYS), `publish` the task-sent event (the target: a
--   pub/sub channel, not a key).
-- Returns record's reply.
local n = tonumber(ARGV[1])
local rkeys, rargs = {}, {}
for i = 1, 7 do rkeys[i] = KEYS[i] end
for i = 1, n do rargs[i] = ARGV[i + 1] end
local out = record(rkeys, rargs)
for i = n + 2, #ARGV, 3 do
  local command, target, value = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if command == 'publish' then
    redis.call('PUBLISH', target, value)
  elseif command == 'lpush' or command == 'pexpire' then
    redis.call(command, KEYS[tonumber(target)], value)
  else
    return redis.error_reply('publish: unexpected command ' .. command)
  end
end
return out
