-- refuse: a submission the client was told failed. If its record exists after all (the
-- publish ran but its reply was lost), the task is cancelled so it never runs.
--
-- KEYS: 1 the task's hash.
-- Returns 1 when the record existed (then `cancel_requested` is set), else 0 (nothing is
--   written: no record is created for a task that was never published).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'cancel_requested', '1')
return 1
