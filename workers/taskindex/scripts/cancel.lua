-- cancel: mark a task that has not started as cancelled, so no worker runs it (claim.lua
-- refuses it).
--
-- KEYS: 1 the task's hash.
-- Returns 'MISSING' (no record), its terminal state (finished already), 'RUNNING' (started,
--   or claimed by a delivery about to run it) or 'OK' (then `cancel_requested` is set).
local r = redis.call('HMGET', KEYS[1], 'state', 'claimed')
if not r[1] then return 'MISSING' end
if TERMINAL[r[1]] then return r[1] end
if r[1] == 'STARTED' or r[2] == '1' then return 'RUNNING' end
redis.call('HSET', KEYS[1], 'cancel_requested', '1')
return 'OK'
