-- acquire_slot: take a slot of a platform-wide rate limit for one owner, fairly: alone an
-- owner may use the whole limit; while others wait, each may hold only an equal share of
-- it. Redis' clock is the one clock.
--
-- KEYS: 1 the limit's log of slots taken (a sorted set: member -> ms), 2 this owner's
--   log, 3 the owners waiting (owner -> ms when last refused).
-- ARGV: 1 the limit, 2 the window (ms), 3 a member naming this slot, 4 the owner's key
--   segment.
-- Returns {1, 0, share} when a slot was taken (then ARGV[3] is in KEYS[1] and KEYS[2]),
--   else {0, ms until a slot may be free, share} (then the owner is recorded as waiting);
--   share 0 when the limit is reached, else the owner's share it is over.
local limit, window, owner = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[4]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, 2 do redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window) end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - 2 * window)
local others = redis.call('ZCARD', KEYS[3])
if redis.call('ZSCORE', KEYS[3], owner) then others = others - 1 end
local share = math.ceil(limit / (others + 1))
local used = redis.call('ZCARD', KEYS[2])
local wait, over
if redis.call('ZCARD', KEYS[1]) >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  wait, over = tonumber(oldest[2]) + window - now, 0
elseif used >= share then
  -- Entries leave oldest first: once this one has, the owner is back under its share.
  local entry = redis.call('ZRANGE', KEYS[2], used - share, used - share, 'WITHSCORES')
  wait, over = tonumber(entry[2]) + window - now, share
else
  for i = 1, 2 do
    redis.call('ZADD', KEYS[i], now, ARGV[3])
    redis.call('PEXPIRE', KEYS[i], window)
  end
  return {1, 0, share}
end
redis.call('ZADD', KEYS[3], now, owner)
redis.call('PEXPIRE', KEYS[3], 2 * window)
return {0, wait, over}
