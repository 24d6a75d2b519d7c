-- prune: remove the records whose retention has passed, with every index entry, count,
-- chunk list, event log and webhook delivery log of theirs.
--
-- KEYS: 1 the expiry index, 2 the index of all tasks, 3 the counts of all tasks.
-- ARGV: 1 now, 2 the most records removed in one call.
-- Returns how many records went.
--
-- Keys built here, not passed in KEYS: each pruned task's hash and chunk list, and the
-- indexes and counts named after its state, owner, queue, name and labels (the key functions of
-- the generated header). Which tasks expire is only known once KEYS[1] is read here.
local now, batch = tonumber(ARGV[1]), tonumber(ARGV[2])
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, batch)
for _, id in ipairs(ids) do
  local task = task_key(id)
  local r = redis.call('HMGET', task, 'state', 'owner', 'queue', 'name', 'labels', 'batch_id')
  local state, owner, queue, name = r[1], r[2], r[3], r[4]
  if r[6] then
    redis.call('ZREM', index_key('batch_id', r[6]), id)
    if state then add_count(counts_key('batch_id', r[6]), state, -1) end
  end
  if r[5] then
    for label in string.gmatch(r[5], '[^\n]+') do
      redis.call('ZREM', index_key('label', label), id)
      if owner then redis.call('ZREM', owner_label_key(owner, label), id) end
    end
  end
  redis.call('ZREM', KEYS[2], id)
  if state then
    redis.call('ZREM', index_key('state', state), id)
    add_count(KEYS[3], state, -1)
    if name and SYSTEM[name] then add_count(SYSTEM_COUNTS, state, -1) end
  end
  if owner then
    redis.call('ZREM', index_key('owner', owner), id)
    if state then
      redis.call('ZREM', owner_state_key(owner, state), id)
      add_count(counts_key('owner', owner), state, -1)
    end
  end
  if queue then
    redis.call('ZREM', index_key('queue', queue), id)
    if state then add_count(counts_key('queue', queue), state, -1) end
  end
  if name then redis.call('ZREM', index_key('name', name), id) end
  redis.call('DEL', task, chunks_key(id), events_key(id), webhooks_key(id))
  redis.call('ZREM', KEYS[1], id)
end
return #ids
