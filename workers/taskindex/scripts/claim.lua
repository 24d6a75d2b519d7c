-- claim: claim a task for execution, right before a worker runs it. While a worker runs
-- the task it refreshes `claimed_at` (every heartbeat, refresh.lua), so a fresh claim by
-- another token means the task is being run right now. A claim goes stale when its worker
-- died or forgot the message (its consumer was reset by a broker outage); then this
-- delivery runs the task.
--
-- KEYS: 1 the task's hash.
-- ARGV: 1 the claim token (one per delivery), 2 now, 3 seconds a claim stays fresh.
-- Returns CLAIM_RUN (claimed with this token, `deliveries` counted: run it),
--   CLAIM_CANCELLED (cancelled before it started), CLAIM_DONE (finished already: a
--   duplicate delivery of a done task) or CLAIM_DUPLICATE (another delivery holds a fresh
--   claim, e.g. Redis redelivered an unacknowledged message after the visibility timeout).
-- Writes only for CLAIM_RUN: `claimed`, `claimed_by`, `claimed_at`, `deliveries` (also for
--   a task no publisher recorded, a foreign client's: its record starts here).
local r = redis.call('HMGET', KEYS[1], 'cancel_requested', 'state', 'claimed_by', 'claimed_at')
if r[1] == '1' then return CLAIM_CANCELLED end
if r[2] and TERMINAL[r[2]] then return CLAIM_DONE end
local token, now, fresh = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
if r[3] and r[3] ~= '' and r[3] ~= token and (tonumber(r[4]) or 0) > now - fresh then
  return CLAIM_DUPLICATE
end
redis.call('HSET', KEYS[1], 'claimed', '1', 'claimed_by', token, 'claimed_at', now)
redis.call('HINCRBY', KEYS[1], 'deliveries', 1)
return CLAIM_RUN
