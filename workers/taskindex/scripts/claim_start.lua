-- claim_start: a worker about to run a task claims it (claim.lua) and, only when the claim
-- is won, stores STARTED (store_result.lua), in one call.
--
-- Calls: claim (claim.lua), store_result (store_result.lua).
-- KEYS: store_result's (1 the result key, 2 the task's hash, ...).
-- ARGV: 1-3 claim's ARGV (token, now, freshness), 4.. store_result's ARGV.
-- Returns {claim's outcome}; nothing is stored unless it is CLAIM_RUN.
local outcome = claim({KEYS[2]}, {ARGV[1], ARGV[2], ARGV[3]})
if outcome ~= CLAIM_RUN then return {outcome} end
local rest = {}
for i = 4, #ARGV do rest[i - 3] = ARGV[i] end
store_result(KEYS, rest)
return {CLAIM_RUN}
