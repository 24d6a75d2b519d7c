"""The durable task index: every task's record and its secondary indexes, in Redis.

Written by whoever sees a task change: the publisher (`before_task_publish`, in any
process that imports the Celery app: gateway, Beat, a plain Python client) and the
workers (through the result backend, see `workers.runtime.backend`). So the history is complete
even when no gateway runs, and every gateway replica reads the same one.

Layout (prefix `claw:`):
- `task:<id>`                hash: the record
- `seq`                      counter: a monotonically increasing number per task
- `idx:all`, `idx:state:<S>`, `idx:queue:<q>`, `idx:name:<n>`, `idx:owner:<o>`,
  `idx:owner:<o>:state:<S>`  sorted sets of task ids scored by `seq` (newest = highest)
- `counts`, `counts:owner:<o>`, `counts:queue:<q>`   hashes: tasks per state
- `expiry`                   sorted set: id -> when its record may be pruned
- `done:<minute>`            counters: tasks finished per minute (throughput)

Every state change is one Lua script, so indexes and counts move together, and a stale
update (a STARTED arriving after SUCCESS, an attempt older than the current one) cannot
overwrite a newer state.
"""

from __future__ import annotations

import json
import time
from typing import Any

PREFIX = "claw:"
STATES = ("PENDING", "STARTED", "RETRY", "SUCCESS", "FAILURE", "REVOKED")
TERMINAL_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
DIMENSIONS = ("owner", "queue", "name")

ARGS_CAP = 256 * 1024
PREVIEW_CAP = 500
DEFAULT_TTL = 7 * 24 * 3600


def task_key(task_id: str) -> str:
    return f"{PREFIX}task:{task_id}"


def index_key(dimension: str | None = None, value: str | None = None) -> str:
    return f"{PREFIX}idx:all" if dimension is None else f"{PREFIX}idx:{dimension}:{value}"


def owner_state_key(owner: str, state: str) -> str:
    return f"{PREFIX}idx:owner:{owner}:state:{state}"


def counts_key(dimension: str | None = None, value: str | None = None) -> str:
    return f"{PREFIX}counts" if dimension is None else f"{PREFIX}counts:{dimension}:{value}"


def done_key(minute: int) -> str:
    return f"{PREFIX}done:{minute}"


# ARGV: prefix, id, state ('' = none), attempt (-1 = unknown), now, ttl, event extra (a
# JSON object or ''), then field pairs. Returns {applied (0/1), previous state or '',
# state after}. An applied change of state is appended to the live feed stream.
RECORD_LUA = """
local FEED_MAXLEN = 100000
local key = KEYS[1]
local p, id, state = ARGV[1], ARGV[2], ARGV[3]
local attempt, now, ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local function osk(o, s) return p .. 'idx:owner:' .. o .. ':state:' .. s end
local RANK = {PENDING=0, STARTED=2, RETRY=3, SUCCESS=10, FAILURE=10, REVOKED=10}
local cur = redis.call('HMGET', key, 'state', 'attempt', 'seq', 'owner', 'queue', 'name')
local cur_state, cur_attempt, seq = cur[1], tonumber(cur[2]) or 0, tonumber(cur[3])
local old = {owner=cur[4], queue=cur[5], name=cur[6]}
if not seq then
  seq = redis.call('INCR', p .. 'seq')
  redis.call('HSET', key, 'task_id', id, 'seq', seq, 'created_at', now)
  redis.call('ZADD', p .. 'idx:all', seq, id)
end
local fields, dims, new_dims = {}, {owner=old.owner, queue=old.queue, name=old.name}, {}
for i = 8, #ARGV, 2 do
  local f, v = ARGV[i], ARGV[i + 1]
  if f == 'owner' or f == 'queue' or f == 'name' then
    if not dims[f] and v ~= '' then
      dims[f] = v
      new_dims[f] = true
      fields[#fields + 1] = f
      fields[#fields + 1] = v
      redis.call('ZADD', p .. 'idx:' .. f .. ':' .. v, seq, id)
    end
  else
    fields[#fields + 1] = f
    fields[#fields + 1] = v
  end
end
-- A refused update of a finished task (a late worker write) leaves its fields alone.
local frozen = state ~= '' and cur_state and RANK[cur_state] == 10
if #fields > 0 and not frozen then redis.call('HSET', key, unpack(fields)) end

local apply = false
if state ~= '' then
  if not cur_state then apply = true
  elseif RANK[cur_state] == 10 then apply = false
  elseif attempt >= 0 and attempt < cur_attempt then apply = false
  elseif attempt > cur_attempt then apply = true
  else apply = (RANK[state] or 0) >= (RANK[cur_state] or 0) end
end

local function count(state_name, d, delta)
  redis.call('HINCRBY', p .. 'counts', state_name, delta)
  if d.owner then
    redis.call('HINCRBY', p .. 'counts:owner:' .. d.owner, state_name, delta)
  end
  if d.queue then
    redis.call('HINCRBY', p .. 'counts:queue:' .. d.queue, state_name, delta)
  end
end

local after = cur_state
if apply and cur_state ~= state then
  if cur_state then
    redis.call('ZREM', p .. 'idx:state:' .. cur_state, id)
    if old.owner then redis.call('ZREM', osk(old.owner, cur_state), id) end
    count(cur_state, old, -1)
  end
  redis.call('ZADD', p .. 'idx:state:' .. state, seq, id)
  if dims.owner then redis.call('ZADD', osk(dims.owner, state), seq, id) end
  count(state, dims, 1)
  after = state
elseif cur_state and (new_dims.owner or new_dims.queue) then
  -- The state stays; it is now also known under the owner or queue just learned.
  if new_dims.owner then
    redis.call('ZADD', osk(dims.owner, cur_state), seq, id)
    redis.call('HINCRBY', p .. 'counts:owner:' .. dims.owner, cur_state, 1)
  end
  if new_dims.queue then redis.call('HINCRBY', p .. 'counts:queue:' .. dims.queue, cur_state, 1) end
end
if apply and cur_state ~= state then
  local event = cjson.encode({type='task', task_id=id, state=state, prev=cur_state or nil,
    ts=now, name=dims.name or nil, queue=dims.queue or nil, owner=dims.owner or nil})
  local extra = ARGV[7]
  if extra ~= '' and extra ~= '{}' then
    -- Spliced as text: a decode/encode round trip in Lua would turn [] into {}.
    event = string.sub(event, 1, -2) .. ',' .. string.sub(extra, 2)
  end
  redis.call('XADD', p .. 'feed', 'MAXLEN', '~', FEED_MAXLEN, '*', 'event', event)
end
if apply then
  redis.call('HSET', key, 'state', state, 'updated_at', now)
  if attempt > cur_attempt then redis.call('HSET', key, 'attempt', attempt) end
  if RANK[state] == 10 and cur_state ~= state then
    redis.call('HSET', key, 'finished_at', now)
    local minute_key = p .. 'done:' .. math.floor(now / 60)
    redis.call('INCR', minute_key)
    redis.call('EXPIRE', minute_key, 7200)
  end
end
redis.call('ZADD', p .. 'expiry', now + ttl, id)
return {apply and 1 or 0, cur_state or '', after or ''}
"""


def with_record(tail: str) -> str:
    """A script that has RECORD_LUA as the local function `record(KEYS, ARGV)`, then `tail`."""
    return "local function record(KEYS, ARGV)\n" + RECORD_LUA + "\nend\n" + tail


# Record a new task and put its message on the queue in one step: no message without its
# record, and a refusal (Redis out of memory: only a script's first write can be refused)
# takes neither. KEYS[1] = task hash, KEYS[2..] = the queue lists written. ARGV[1] = n,
# ARGV[2..n+1] = RECORD_LUA's arguments, then (command, target, value) triples as kombu
# would run them: `lpush` the message, `publish` the task-sent event, `pexpire`.
PUBLISH_COMMANDS = ("lpush", "publish", "pexpire")
PUBLISH_LUA = with_record("""
local n = tonumber(ARGV[1])
local rargs = {}
for i = 1, n do rargs[i] = ARGV[i + 1] end
local out = record({KEYS[1]}, rargs)
for i = n + 2, #ARGV, 3 do
  redis.call(ARGV[i], ARGV[i + 1], ARGV[i + 2])
end
return out
""")


def publish_call(rargs: list[Any], commands: list[tuple[Any, ...]]) -> tuple[list, list]:
    """PUBLISH_LUA's KEYS and ARGV: the record (RECORD_LUA's arguments, task id second)
    and kombu's (command, target, value) triples."""
    keys = [task_key(rargs[1]), *(c[1] for c in commands if c[0] == "lpush")]
    return keys, [len(rargs), *rargs, *(part for c in commands for part in c)]


# Store a task's result meta the way Celery's Redis backend does (SET with expiry, PUBLISH
# on the key for waiting clients; never over a SUCCESS) and apply the state to the index
# in the same call. KEYS[1] = task hash, KEYS[2] = result key. ARGV[1] = meta (JSON),
# ARGV[2] = seconds to keep it (0: no expiry), ARGV[3..] = RECORD_LUA's arguments.
# Returns RECORD_LUA's reply, or {-1} when a SUCCESS was already stored.
STORE_BODY = """
local current = redis.call('GET', KEYS[2])
if current then
  local ok, meta = pcall(cjson.decode, current)
  if ok and type(meta) == 'table' and meta['status'] == 'SUCCESS' then return {-1} end
end
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
else
  redis.call('SET', KEYS[2], ARGV[1])
end
redis.call('PUBLISH', KEYS[2], ARGV[1])
local rargs = {}
for i = 3, #ARGV do rargs[i - 2] = ARGV[i] end
return record({KEYS[1]}, rargs)
"""
STORE_LUA = with_record(STORE_BODY)

# Progress, output chunks and other task-scoped events, appended to the feed with the
# task's owner, name and queue so the gateway can filter without a lookup.
# KEYS[1] = task hash. ARGV: prefix, type, task id, now, payload (JSON object), chunk text.
# Returns {chunk index or -1, event id}.
FEED_LUA = """
local key = KEYS[1]
local p, kind, id, now, payload = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local r = redis.call('HMGET', key, 'owner', 'name', 'queue', 'state')
local index = -1
if kind == 'chunk' then
  index = redis.call('RPUSH', key .. ':chunks', ARGV[6]) - 1
  redis.call('EXPIRE', key .. ':chunks', 86400)
elseif kind == 'progress' and r[4] then
  redis.call('HSET', key, 'progress', payload)
end
local base = {type=kind, task_id=id, state=r[4] or 'STARTED', ts=now,
  owner=r[1] or nil, name=r[2] or nil, queue=r[3] or nil}
if index >= 0 then base['index'] = index end
local event = cjson.encode(base)
if payload ~= '' and payload ~= '{}' then
  event = string.sub(event, 1, -2) .. ',' .. string.sub(payload, 2)
end
local event_id = redis.call('XADD', p .. 'feed', 'MAXLEN', '~', 100000, '*', 'event', event)
return {index, event_id}
"""

# Claim a task for execution, right before a worker runs it. KEYS[1] = task hash.
# ARGV: prefix, claim token (one per delivery), now, seconds a claim stays fresh. While a
# worker runs the task it refreshes `claimed_at` (every heartbeat, see `refresh`), so a
# fresh claim by another token means the task is being run right now. Returns one of:
#   0 run it (claimed with this token, `deliveries` counted)
#   1 cancelled before it started
#   2 already finished (a duplicate delivery of a done task)
#   3 another delivery holds a fresh claim: a duplicate, e.g. Redis redelivered an
#     unacknowledged message after the visibility timeout (ETA tasks waiting longer
#     than it, long tasks) to this or another worker
# A claim goes stale when its worker died or forgot the message (its consumer was reset
# by a broker outage); then this delivery runs the task.
CLAIM_LUA = """
local r = redis.call('HMGET', KEYS[1], 'cancel_requested', 'state', 'claimed_by', 'claimed_at')
if r[1] == '1' then return 1 end
if r[2] == 'SUCCESS' or r[2] == 'FAILURE' or r[2] == 'REVOKED' then return 2 end
local token, now, fresh = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
if r[3] and r[3] ~= '' and r[3] ~= token and (tonumber(r[4]) or 0) > now - fresh then
  return 3
end
-- Also for a task no publisher recorded (a foreign client): its record starts here.
redis.call('HSET', KEYS[1], 'claimed', '1', 'claimed_by', token, 'claimed_at', now)
redis.call('HINCRBY', KEYS[1], 'deliveries', 1)
return 0
"""

# Keep a running task's claim fresh. KEYS[1] = task hash; ARGV: token, now.
REFRESH_LUA = """
if redis.call('HGET', KEYS[1], 'claimed_by') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'claimed_at', ARGV[2])
end
return 0
"""
CLAIM_RUN, CLAIM_CANCELLED, CLAIM_DONE, CLAIM_DUPLICATE = 0, 1, 2, 3
CLAIM_FRESH = 10.0

# A worker about to run a task: claim it (CLAIM_LUA) and, only when the claim is won,
# store STARTED (STORE_LUA), in one call. KEYS = STORE_LUA's; ARGV[1..4] = CLAIM_LUA's,
# ARGV[5..] = STORE_LUA's. Returns {claim outcome}.
CLAIM_START_LUA = with_record(
    "local function claim(KEYS, ARGV)\n" + CLAIM_LUA + "\nend\n"
    "local function store(KEYS, ARGV)\n" + STORE_BODY + "\nend\n"
    """
local outcome = claim({KEYS[1]}, {ARGV[1], ARGV[2], ARGV[3], ARGV[4]})
if outcome ~= 0 then return {outcome} end
local rest = {}
for i = 5, #ARGV do rest[i - 4] = ARGV[i] end
store(KEYS, rest)
return {0}
"""
)

# Prune records whose expiry passed. ARGV: prefix, now, batch. Returns how many went.
PRUNE_LUA = """
local p, now, batch = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local ids = redis.call('ZRANGEBYSCORE', p .. 'expiry', '-inf', now, 'LIMIT', 0, batch)
for _, id in ipairs(ids) do
  local key = p .. 'task:' .. id
  local r = redis.call('HMGET', key, 'state', 'owner', 'queue', 'name')
  local state, owner, queue, name = r[1], r[2], r[3], r[4]
  redis.call('ZREM', p .. 'idx:all', id)
  if state then
    redis.call('ZREM', p .. 'idx:state:' .. state, id)
    redis.call('HINCRBY', p .. 'counts', state, -1)
  end
  if owner then
    redis.call('ZREM', p .. 'idx:owner:' .. owner, id)
    if state then
      redis.call('ZREM', p .. 'idx:owner:' .. owner .. ':state:' .. state, id)
      redis.call('HINCRBY', p .. 'counts:owner:' .. owner, state, -1)
    end
  end
  if queue then
    redis.call('ZREM', p .. 'idx:queue:' .. queue, id)
    if state then redis.call('HINCRBY', p .. 'counts:queue:' .. queue, state, -1) end
  end
  if name then redis.call('ZREM', p .. 'idx:name:' .. name, id) end
  redis.call('DEL', key, key .. ':chunks')
  redis.call('ZREM', p .. 'expiry', id)
end
return #ids
"""


def capped_json(value: Any, cap: int = ARGS_CAP) -> tuple[str, bool]:
    """JSON text of `value`, or a truncated form and True when it is larger than `cap`."""
    try:
        text = json.dumps(value, default=repr, ensure_ascii=False)
    except (TypeError, ValueError):
        text = json.dumps(repr(value))
    if len(text) <= cap:
        return text, False
    return json.dumps(text[:cap] + "..."), True


def preview(value: Any) -> str:
    text, _ = capped_json(value, PREVIEW_CAP)
    return text


def event_json(event: dict[str, Any] | None) -> str:
    return json.dumps(event, default=str, separators=(",", ":")) if event else ""


def encode_fields(fields: dict[str, Any]) -> list[str]:
    flat: list[str] = []
    for name, value in fields.items():
        if value is None:
            continue
        flat += [name, value if isinstance(value, str) else json.dumps(value)]
    return flat


def record_args(
    task_id: str,
    state: str | None,
    attempt: int | None,
    ttl: int,
    event: dict[str, Any] | None = None,
    fields: dict[str, Any] | None = None,
    now: float | None = None,
) -> list[Any]:
    """RECORD_LUA's ARGV."""
    return [
        PREFIX, task_id, state or "", -1 if attempt is None else attempt,
        now if now is not None else time.time(), ttl, event_json(event),
        *encode_fields(fields or {}),
    ]  # fmt: skip


# Records of tasks being published, by task id (RECORD_LUA's arguments, left by the
# `before_task_publish` hook in workers.runtime.signals): our transport
# (workers.runtime.priority) writes
# each together with its message in one script (PUBLISH_LUA), so a message never exists
# without its record, nor a record of a message that failed to publish. With another
# transport the entry stays, and the `after_task_publish` hook writes it instead.
_pending: dict[str, tuple[float, list[Any]]] = {}
PENDING_KEEP = 60.0


def stash_pending_record(task_id: str, args: list[Any]) -> None:
    now = time.monotonic()
    if len(_pending) > 1000:  # entries of publishes that failed
        for stale in [k for k, (at, _) in _pending.items() if at < now - PENDING_KEEP]:
            _pending.pop(stale, None)
    _pending[task_id] = (now, args)


def peek_pending_record(task_id: str) -> list[Any] | None:
    entry = _pending.get(task_id)
    return entry[1] if entry is not None else None


def pop_pending_record(task_id: str) -> tuple[float, list[Any]] | None:
    return _pending.pop(task_id, None)


class TaskIndex:
    """The blocking writer used by publishers and workers."""

    def __init__(self, client: Any, ttl: int = DEFAULT_TTL) -> None:
        self.client = client
        self.ttl = ttl
        self._record = client.register_script(RECORD_LUA)
        self._refresh = client.register_script(REFRESH_LUA)
        self._feed = client.register_script(FEED_LUA)
        self._prune = client.register_script(PRUNE_LUA)

    def record(
        self,
        task_id: str,
        state: str | None,
        attempt: int | None = None,
        now: float | None = None,
        event: dict[str, Any] | None = None,
        **fields: Any,
    ) -> list[Any]:
        """Apply a state (or none) and fields to a task's record, creating it if new.

        `event` adds fields to the feed event sent when the state changes (a result, an
        error, the worker).
        """
        return self.record_with(record_args(task_id, state, attempt, self.ttl, event, fields, now))

    def record_with(self, args: list[Any]) -> list[Any]:
        """Apply RECORD_LUA's arguments as `record_args` builds them."""
        return self._record(keys=[task_key(args[1])], args=args)

    def feed(
        self, kind: str, task_id: str, payload: dict[str, Any] | None = None, chunk: str = ""
    ) -> tuple[int, str]:
        """Append a task-scoped event (progress, chunk) to the feed."""
        index, event_id = self._feed(
            keys=[task_key(task_id)],
            args=[PREFIX, kind, task_id, time.time(), event_json(payload), chunk],
        )
        return int(index), event_id

    def refresh(self, claims: list[tuple[str, str]]) -> None:
        """Keep the claims (task id, token) of running tasks fresh."""
        if not claims:
            return
        now = time.time()
        with self.client.pipeline(transaction=False) as pipe:
            for task_id, token in claims:
                self._refresh(keys=[task_key(task_id)], args=[token, now], client=pipe)
            pipe.execute()

    def release(self, task_id: str) -> None:
        """Let any worker run the task again (its worker process died mid-run)."""
        self.client.hset(task_key(task_id), mapping={"claimed": "0", "claimed_by": ""})

    def count_worker_loss(self, task_id: str) -> int:
        """One more death of a worker process while running the task; the new total."""
        return int(self.client.hincrby(task_key(task_id), "worker_losses", 1))

    def prune(self, now: float | None = None, batch: int = 500) -> int:
        """Remove every record whose retention has passed, with its index entries."""
        now = now if now is not None else time.time()
        removed = 0
        while True:
            gone = int(self._prune(args=[PREFIX, now, batch]))
            removed += gone
            if gone < batch:
                return removed
