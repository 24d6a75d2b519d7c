-- delete_documents: remove one document of a knowledge base, or all of them.
--
-- KEYS: 1 the knowledge base's document map (document id -> version key), 2 the owner's
--   set of knowledge bases.
-- ARGV: 1 the document id, or '' for every document (then KEYS[1] goes too), 2 the
--   knowledge base's id (leaves KEYS[2] with its last document).
-- Returns the number of chunks removed (0 for an unknown document).
--
-- Keys not passed in KEYS: the documents' version keys, only known once KEYS[1] is read.
local removed = 0
local function drop(ver)
  local doc = redis.call('HGET', ver, 'doc')
  if doc then removed = removed + (cjson.decode(doc)['chunks'] or 0) end
  redis.call('DEL', ver)
end
if ARGV[1] ~= '' then
  local ver = redis.call('HGET', KEYS[1], ARGV[1])
  if ver then drop(ver) end
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  local vals = redis.call('HVALS', KEYS[1])
  for _, ver in ipairs(vals) do drop(ver) end
  redis.call('DEL', KEYS[1])
end
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], ARGV[2]) end
return removed
