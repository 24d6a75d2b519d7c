-- swap_version: make a fully written version of a document its current one, and delete the
-- version it replaces, at once for readers.
--
-- KEYS: 1 the knowledge base's document map (document id -> version key), 2 the new
--   version's key, 3 the owner's set of knowledge bases.
-- ARGV: 1 the document id, 2 the knowledge base's id (added to KEYS[3]).
-- Returns the replaced version's key, or ''. The new version stops expiring.
--
-- Key not passed in KEYS: the replaced version's, which is only known once KEYS[1] is read.
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('PERSIST', KEYS[2])
redis.call('HSET', KEYS[1], ARGV[1], KEYS[2])
redis.call('SADD', KEYS[3], ARGV[2])
if old and old ~= KEYS[2] then redis.call('DEL', old) end
return old or ''
