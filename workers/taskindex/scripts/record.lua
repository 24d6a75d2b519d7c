-- record: apply a state (or none) and fields to a task's record, creating it if new; its
-- indexes, counts, the live feed and the throughput counter move in the same step.
--
-- KEYS: 1 the task's hash, 2 the sequence counter, 3 the index of all tasks, 4 the expiry
--   index, 5 the feed stream, 6 the counts of all tasks, 7 the finished-per-minute counter
--   of the minute of ARGV[4].
-- ARGV: 1 task id, 2 state ('' for none), 3 attempt (-1 when unknown), 4 now (epoch
--   seconds), 5 seconds to keep the record, 6 more fields of the feed event (a JSON object,
--   or ''), then field/value pairs.
-- Returns {applied (0/1), state before or '', state after or ''}.
-- Writes: the fields, except on a finished task a state update would not move (a late
--   worker write); `owner`, `queue` and `name` only while the record has none. An applied
--   change of state moves the task between the state indexes and counts and is appended to
--   the feed and the task's event log (events_key, numbered: `seq`), and, when the task's
--   webhook asked for it (STARTED: started, a final state: completed), to WEBHOOK_STREAM,
--   which workers turn into deliveries (workers/notify/task_webhooks.py); a first terminal
--   state sets `finished_at` and counts in KEYS[7], and one more ended item of the task's
--   batch (batch_done.lua). `labels` (tags and metadata pairs, `workers.taskindex.labels`)
--   given to a record without them index it under each; `batch_id` like `owner`.
--
-- Keys built here, not passed in KEYS: the indexes and counts named after a value of the
-- record (its state before and after, its owner, queue, name, batch and labels), with the key
-- functions of the generated header. The state before, and the owner, queue and name of a record whose
-- writer does not name them (a worker, the gateway's cancel), are only known once the
-- record is read here; building every such key the same way keeps one code path.
local task = KEYS[1]
local id, state = ARGV[1], ARGV[2]
local attempt, now, ttl = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local cur = redis.call('HMGET', task, 'state', 'attempt', 'seq', 'owner', 'queue', 'name',
  'webhook_events', 'batch_id')
local cur_state, cur_attempt, seq = cur[1], tonumber(cur[2]) or 0, tonumber(cur[3])
local old = {owner=cur[4], queue=cur[5], name=cur[6], batch_id=cur[8]}
if not seq then
  seq = redis.call('INCR', KEYS[2])
  redis.call('HSET', task, 'task_id', id, 'seq', seq, 'created_at', now)
  redis.call('ZADD', KEYS[3], seq, id)
end
local fields, new_dims = {}, {}
local dims = {owner=old.owner, queue=old.queue, name=old.name, batch_id=old.batch_id}
local new_labels = nil
for i = 7, #ARGV, 2 do
  local f, v = ARGV[i], ARGV[i + 1]
  if f == 'labels' and v ~= '' and redis.call('HEXISTS', task, 'labels') == 0 then
    new_labels = v
  end
  if f == 'owner' or f == 'queue' or f == 'name' or f == 'batch_id' then
    if not dims[f] and v ~= '' then
      dims[f] = v
      new_dims[f] = true
      fields[#fields + 1] = f
      fields[#fields + 1] = v
      redis.call('ZADD', index_key(f, v), seq, id)
    end
  else
    fields[#fields + 1] = f
    fields[#fields + 1] = v
  end
end
-- Tags and metadata pairs (`labels`, one per line, written once at submission): indexed
-- per owner and for everyone, like a state.
if new_labels then
  for label in string.gmatch(new_labels, '[^\n]+') do
    redis.call('ZADD', index_key('label', label), seq, id)
    if dims.owner then redis.call('ZADD', owner_label_key(dims.owner, label), seq, id) end
  end
end
-- A refused update of a finished task (a late worker write) leaves its fields alone.
local frozen = state ~= '' and cur_state and TERMINAL[cur_state]
if #fields > 0 and not frozen then redis.call('HSET', task, unpack(fields)) end

local apply = false
if state ~= '' then
  if not cur_state then apply = true
  elseif TERMINAL[cur_state] then apply = false
  elseif attempt >= 0 and attempt < cur_attempt then apply = false
  elseif attempt > cur_attempt then apply = true
  else apply = (RANK[state] or 0) >= (RANK[cur_state] or 0) end
end

-- (A count left at zero is removed by add_count: the counts of a batch whose items have
-- all moved on hold no field for their first state.)
local function count(state_name, d, delta)
  add_count(KEYS[6], state_name, delta)
  if d.name and SYSTEM[d.name] then add_count(SYSTEM_COUNTS, state_name, delta) end
  if d.owner then add_count(counts_key('owner', d.owner), state_name, delta) end
  if d.queue then add_count(counts_key('queue', d.queue), state_name, delta) end
  if d.batch_id then add_count(counts_key('batch_id', d.batch_id), state_name, delta) end
end

local after = cur_state
if apply and cur_state ~= state then
  if cur_state then
    redis.call('ZREM', index_key('state', cur_state), id)
    if old.owner then redis.call('ZREM', owner_state_key(old.owner, cur_state), id) end
    count(cur_state, old, -1)
  end
  redis.call('ZADD', index_key('state', state), seq, id)
  if dims.owner then redis.call('ZADD', owner_state_key(dims.owner, state), seq, id) end
  count(state, dims, 1)
  after = state
elseif cur_state and (new_dims.owner or new_dims.queue) then
  -- The state stays; it is now also known under the owner or queue just learned.
  if new_dims.owner then
    redis.call('ZADD', owner_state_key(dims.owner, cur_state), seq, id)
    redis.call('HINCRBY', counts_key('owner', dims.owner), cur_state, 1)
  end
  if new_dims.queue then redis.call('HINCRBY', counts_key('queue', dims.queue), cur_state, 1) end
end
if apply and cur_state ~= state then
  -- Numbered in the task's event log (its SSE stream replays it) and sent to the feed.
  local log = events_key(id)
  local event = cjson.encode({type='task', task_id=id, state=state, prev=cur_state or nil,
    ts=now, name=dims.name or nil, queue=dims.queue or nil, owner=dims.owner or nil,
    seq=redis.call('LLEN', log) + 1})
  local extra = ARGV[6]
  if extra ~= '' and extra ~= '{}' then
    -- Spliced as text: a decode/encode round trip in Lua would turn [] into {}.
    event = string.sub(event, 1, -2) .. ',' .. string.sub(extra, 2)
  end
  local seq_e = redis.call('RPUSH', log, event)
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', FEED_MAXLEN, '*', 'event', event)
  -- The task's webhook, when it asked for this event (set at submission, before any of
  -- these states).
  local hooks = cur[7]
  local hook = (state == 'STARTED' and 'started') or (TERMINAL[state] and 'completed')
  if hooks and hook and string.find(hooks, ',' .. hook .. ',', 1, true) then
    redis.call('XADD', WEBHOOK_STREAM, 'MAXLEN', '~', WEBHOOK_STREAM_MAXLEN, '*',
      'task_id', id, 'event', hook, 'seq', seq_e)
  end
end
if apply then
  redis.call('HSET', task, 'state', state, 'updated_at', now)
  if attempt > cur_attempt then redis.call('HSET', task, 'attempt', attempt) end
  if TERMINAL[state] and cur_state ~= state then
    redis.call('HSET', task, 'finished_at', now)
    local batch = dims.batch_id and batch_key(dims.batch_id)
    -- One more item of its batch ended: maybe the last. A batch whose record has expired
    -- is not made again (it would have no expiry, and nobody to announce its end to).
    if batch and redis.call('EXISTS', batch) == 1 then
      redis.call('HINCRBY', batch, 'ended', 1)
      batch_done({batch}, {dims.batch_id, now})
    end
    if not (dims.name and SYSTEM[dims.name]) then  -- housekeeping is not throughput
      redis.call('INCR', KEYS[7])
      redis.call('EXPIRE', KEYS[7], DONE_TTL)
    end
  end
end
redis.call('ZADD', KEYS[4], now + ttl, id)
return {apply and 1 or 0, cur_state or '', after or ''}
