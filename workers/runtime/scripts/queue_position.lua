-- queue_position: where a pending task's message is among its queue's, and its rate's
-- use (GET /status/{id}?explain=true, service/views/tasks.py).
--
-- KEYS: the queue's priority lists in the order workers drain them, then (with a rate) the
--   rate's log of slots taken (workers/runtime/scripts/acquire_slot.lua).
-- ARGV: 1 the task id, 2 how many of its own list's oldest messages to look through, 3 the
--   number of lists, 4 which is the task's own (from 1), 5 the rate's window in ms ('' for
--   none).
-- Returns {messages in the lists drained before its own, the task's place among its own
--   list's messages from the oldest (-1: not among those looked through), that list's
--   length, messages in all the lists, slots taken in the rate's window (-1: no rate)}.
--   kombu LPUSHes and BRPOPs: the oldest is the tail.
local lists, own = tonumber(ARGV[3]), tonumber(ARGV[4])
local before, total, length = 0, 0, 0
for i = 1, lists do
  local n = redis.call('LLEN', KEYS[i])
  if i < own then before = before + n elseif i == own then length = n end
  total = total + n
end
local limit = math.min(length, tonumber(ARGV[2]))
local found, from = -1, 0
while found < 0 and from < limit do
  local upto = math.min(from + 100, limit)
  local items = redis.call('LRANGE', KEYS[own], -upto, -(from + 1))
  for j = #items, 1, -1 do
    if string.find(items[j], ARGV[1], 1, true) then
      found = from + #items - j
      break
    end
  end
  from = upto
end
local used = -1
if ARGV[5] ~= '' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  used = redis.call('ZCOUNT', KEYS[lists + 1], '(' .. (now - tonumber(ARGV[5])), '+inf')
end
return {before, found, length, total, used}
