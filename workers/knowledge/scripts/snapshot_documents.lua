-- snapshot_documents: every current document of a knowledge base with its chunks and
-- vectors, as one consistent snapshot (a swap never shows half).
--
-- KEYS: 1 the knowledge base's document map (document id -> version key).
-- Returns {document id, its version hash flattened, ...}. Writes nothing.
--
-- Keys not passed in KEYS: the documents' version keys, only known once KEYS[1] is read.
local out = {}
local map = redis.call('HGETALL', KEYS[1])
for i = 1, #map, 2 do
  out[#out + 1] = map[i]
  out[#out + 1] = redis.call('HGETALL', map[i + 1])
end
return out
