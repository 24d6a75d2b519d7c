-- append_turns: store a task's turn (its messages) in a conversation, once per task.
--
-- KEYS: 1 the conversation's turns (a list), 2 its meta hash, 3 the ids of the tasks whose
--   turns are stored (a set).
-- ARGV: 1 the task id ('' to store without the once-per-task check), 2 seconds to keep
--   the conversation, 3 the most messages kept, then the messages (JSON).
-- Returns 0 when this task's turn was stored already (then nothing changes), else 1: the
--   messages are appended, the list trimmed to its newest ARGV[3], every key's expiry
--   renewed.
if ARGV[1] ~= '' and redis.call('SADD', KEYS[3], ARGV[1]) == 0 then return 0 end
for i = 4, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[3]), -1)
for _, k in ipairs(KEYS) do redis.call('EXPIRE', k, tonumber(ARGV[2])) end
return 1
