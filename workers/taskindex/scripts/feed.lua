-- feed: append a task-scoped event (progress, an output chunk, a restart of the output, a
-- wait) to the task's event log and the live feed, with the task's owner, name, queue and
-- state, so readers can filter without a lookup.
--
-- KEYS: 1 the task's hash, 2 its chunk list, 3 the feed stream.
-- ARGV: 1 the event's type, 2 task id, 3 now, 4 the event's fields (a JSON object, or
--   ''), 5 the chunk's text (for type 'chunk').
-- Writes: a chunk is appended to KEYS[2] (kept CHUNKS_TTL seconds), 'chunks_reset' empties
--   it; progress is kept in the record's `progress` field when the record exists. The event
--   is numbered (`seq`) in the task's event log (events_key), which its SSE stream replays;
--   a chunk or progress goes to WEBHOOK_STREAM too when the task's webhook wants `output`.
-- Returns {the chunk's index in KEYS[2] or -1, the event's id}.
local kind, id, now, payload = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local r = redis.call('HMGET', KEYS[1], 'owner', 'name', 'queue', 'state', 'webhook_events')
local index = -1
if kind == 'chunk' then
  index = redis.call('RPUSH', KEYS[2], ARGV[5]) - 1
  redis.call('EXPIRE', KEYS[2], CHUNKS_TTL)
elseif kind == 'chunks_reset' then
  redis.call('DEL', KEYS[2])
elseif kind == 'progress' and r[4] then
  redis.call('HSET', KEYS[1], 'progress', payload)
end
-- Only a recorded task has an event log: a log without a record would never be pruned.
local log = r[4] and events_key(id)
local base = {type=kind, task_id=id, state=r[4] or 'STARTED', ts=now,
  owner=r[1] or nil, name=r[2] or nil, queue=r[3] or nil,
  seq=log and redis.call('LLEN', log) + 1 or nil}
if index >= 0 then base['index'] = index end
local event = cjson.encode(base)
if payload ~= '' and payload ~= '{}' then
  event = string.sub(event, 1, -2) .. ',' .. string.sub(payload, 2)
end
if log then
  local seq = redis.call('RPUSH', log, event)
  -- Output (chunks, progress) for a webhook that asked for it.
  if r[5] and (kind == 'chunk' or kind == 'progress')
      and string.find(r[5], ',output,', 1, true) then
    redis.call('XADD', WEBHOOK_STREAM, 'MAXLEN', '~', WEBHOOK_STREAM_MAXLEN, '*',
      'task_id', id, 'event', 'output', 'seq', seq)
  end
end
local event_id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', FEED_MAXLEN, '*', 'event', event)
return {index, event_id}
