"""The gateway's view of the task index (`workers.taskindex.index`): reads, cancel, retry links.

All reads are index lookups (sorted-set ranges and hash reads), never scans of the
history, so they cost the same at a thousand tasks or a million.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio
import redis.exceptions

from workers.taskindex.index import (
    DEFAULT_TTL,
    PREFIX,
    RECORD_LUA,
    STATES,
    counts_key,
    done_key,
    index_key,
    owner_state_key,
    record_args,
    task_key,
)

RESULT_KEY = "celery-task-meta-{}"
# What a task id may look like: the gateway's UUIDs, Celery's (uuid4), or a Python
# publisher's own id in the same charset. Never a ':', which would let an id name another
# key of a task (`claw:task:<id>:chunks` is the reply stream of <id>, not a task).
TASK_ID = re.compile(r"[A-Za-z0-9_.-]{1,255}")
SUMMARY_FIELDS = (
    "task_id", "name", "queue", "state", "priority", "owner", "submitted_at", "started_at",
    "finished_at", "retries", "worker", "error_type", "error_message", "result_preview", "seq",
)  # fmt: skip
SCAN_BATCH = 200
SCAN_BUDGET = 5000

# Returns the state that blocked the cancel, 'RUNNING' for a claimed task, or 'OK'.
CANCEL_LUA = """
local r = redis.call('HMGET', KEYS[1], 'state', 'claimed')
if not r[1] then return 'MISSING' end
if r[1] == 'SUCCESS' or r[1] == 'FAILURE' or r[1] == 'REVOKED' then return r[1] end
if r[1] == 'STARTED' or r[2] == '1' then return 'RUNNING' end
redis.call('HSET', KEYS[1], 'cancel_requested', '1')
return 'OK'
"""

# A submission the client was told failed: if its record exists after all (the script ran
# but its reply was lost), the task is cancelled so it never runs. Returns 1 when it was.
REFUSE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'cancel_requested', '1')
return 1
"""
NOT_ACCEPTED = {"type": "NotAccepted", "message": "the broker did not take the task"}
REFUSAL_RETRY = 0.25
REFUSAL_KEEP = 3600.0

# Link a task to its retry, once. Returns the existing link or ''.
LINK_RETRY_LUA = """
local existing = redis.call('HGET', KEYS[1], 'retried_as')
if existing then return existing end
redis.call('HSET', KEYS[1], 'retried_as', ARGV[1])
return ''
"""


# One page of an index with the records' summary fields, in one call. KEYS[1] = index.
# ARGV: prefix, upper score bound (ZREVRANGEBYSCORE max), count, then the field names.
# Returns flat (id, score, {values}) triples, newest first.
PAGE_LUA = """
local batch = redis.call('ZREVRANGEBYSCORE', KEYS[1], ARGV[2], '-inf', 'WITHSCORES',
  'LIMIT', 0, tonumber(ARGV[3]))
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
local out = {}
for i = 1, #batch, 2 do
  out[#out + 1] = batch[i]
  out[#out + 1] = batch[i + 1]
  out[#out + 1] = redis.call('HMGET', ARGV[1] .. 'task:' .. batch[i], unpack(fields))
end
return out
"""


# A task's record and, unless it failed or was revoked, its result meta, in one call.
# KEYS[1] = task hash, KEYS[2] = Celery's result key.
STATUS_LUA = """
local record = redis.call('HGETALL', KEYS[1])
local meta = false
if #record > 0 then
  local state = redis.call('HGET', KEYS[1], 'state')
  if state ~= 'FAILURE' and state ~= 'REVOKED' then meta = redis.call('GET', KEYS[2]) end
end
return {record, meta}
"""


@dataclass(frozen=True)
class ListQuery:
    limit: int = 50
    cursor: int | None = None
    state: str | None = None
    queue: str | None = None
    name: str | None = None
    owner: str | None = None


@dataclass
class Page:
    tasks: list[dict[str, Any]]
    next_cursor: str | None


def decode_record(raw: dict[str, str]) -> dict[str, Any]:
    """Typed values from the hash's strings."""
    out: dict[str, Any] = dict(raw)
    for name in ("submitted_at", "started_at", "finished_at", "created_at", "updated_at"):
        if out.get(name):
            out[name] = float(out[name])
    for name in ("priority", "retries", "seq", "attempt"):
        if out.get(name) not in (None, ""):
            out[name] = int(float(out[name]))
    for name in ("progress", "args", "kwargs", "eta", "timelimit", "traceback"):
        if out.get(name):
            try:
                out[name] = json.loads(out[name])
            except ValueError:
                pass
    return out


def is_task_id(value: str) -> bool:
    return TASK_ID.fullmatch(value) is not None


class TaskStore:
    def __init__(self, client: redis.asyncio.Redis, ttl: int = DEFAULT_TTL) -> None:
        self.client = client
        self.ttl = ttl
        self._record = client.register_script(RECORD_LUA)
        self._cancel = client.register_script(CANCEL_LUA)
        self._link = client.register_script(LINK_RETRY_LUA)
        self._refuse = client.register_script(REFUSE_LUA)
        # Refusals not written yet (Redis was down): task id -> when it was refused.
        self.unwritten_refusals: dict[str, float] = {}
        self._page = client.register_script(PAGE_LUA)
        self._status = client.register_script(STATUS_LUA)

    async def get(self, task_id: str) -> dict[str, Any] | None:
        """The task's record; None for an unknown id or one no task can have."""
        if not is_task_id(task_id):
            return None
        raw = await self.client.hgetall(task_key(task_id))
        return decode_record(raw) if raw else None

    async def get_with_result(self, task_id: str) -> tuple[dict[str, Any] | None, Any]:
        """The record, and Celery's result meta unless the task failed or was revoked (the
        record has all a failure needs; the meta would add its traceback again)."""
        if not is_task_id(task_id):
            return None, None
        flat, meta = await self._status(keys=[task_key(task_id), RESULT_KEY.format(task_id)])
        if not flat:
            return None, None
        raw = dict(zip(flat[::2], flat[1::2], strict=True))
        return decode_record(raw), (json.loads(meta) if meta else None)

    async def record(
        self, task_id: str, state: str | None, event: dict[str, Any] | None = None, **fields: Any
    ) -> list[Any]:
        args = record_args(task_id, state, None, self.ttl, event, fields)
        return await self._record(keys=[task_key(task_id)], args=args)

    async def request_cancel(self, task_id: str) -> str:
        if not is_task_id(task_id):
            return "MISSING"
        return await self._cancel(keys=[task_key(task_id)])

    async def refuse(self, task_id: str) -> None:
        """The client was told its submission failed: make sure the task never runs.

        A publish that failed on a lost connection may have reached Redis all the same.
        When Redis cannot be asked now, `retry_refusals` asks as soon as it is back, ahead
        of the workers, which reconnect more slowly.
        """
        try:
            await self._write_refusal(task_id)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
            self.unwritten_refusals[task_id] = time.monotonic()

    async def _write_refusal(self, task_id: str) -> None:
        if await self._refuse(keys=[task_key(task_id)]):
            await self.record(
                task_id, "REVOKED", event={"error": NOT_ACCEPTED},
                error_type=NOT_ACCEPTED["type"], error_message=NOT_ACCEPTED["message"],
            )  # fmt: skip

    async def retry_refusals(self) -> None:
        """Runs for the gateway's lifetime: writes the refusals Redis missed."""
        while True:
            await asyncio.sleep(REFUSAL_RETRY)
            now = time.monotonic()
            for task_id, refused_at in list(self.unwritten_refusals.items()):
                if refused_at < now - REFUSAL_KEEP:
                    self.unwritten_refusals.pop(task_id, None)
                    continue
                try:
                    await self._write_refusal(task_id)
                except (redis.exceptions.RedisError, OSError):
                    break  # still down: all of them wait for the next round
                self.unwritten_refusals.pop(task_id, None)

    async def link_retry(self, task_id: str, new_id: str) -> str | None:
        existing = await self._link(keys=[task_key(task_id)], args=[new_id])
        return existing or None

    async def list(self, query: ListQuery) -> Page:
        """Newest first, filtered; `next_cursor` continues after the last task looked at.

        One index range answers it when one index covers the filters. Otherwise the most
        selective index is walked in batches and the rest checked on each record, up to a
        budget per request; a short page then comes with a cursor to go on from.
        """
        primary, remaining = self._plan(query)
        upper = f"({query.cursor}" if query.cursor is not None else "+inf"
        tasks: list[dict[str, Any]] = []
        scanned = 0
        more = False
        last_seq: float | None = None
        while len(tasks) < query.limit and scanned < SCAN_BUDGET:
            size = SCAN_BATCH if remaining else query.limit - len(tasks)
            batch = await self._page_of(primary, upper, size + 1)
            more = len(batch) > size
            batch = batch[:size]
            for i, (score, record) in enumerate(batch):
                last_seq = score
                scanned += 1
                if record is not None and all(record.get(f) == v for f, v in remaining.items()):
                    tasks.append(record)
                if len(tasks) == query.limit:
                    more = more or i < len(batch) - 1
                    break
            if not more:
                break
            upper = f"({int(last_seq or 0)}"
        next_cursor = str(int(last_seq)) if more and last_seq is not None else None
        return Page(tasks, next_cursor)

    def _plan(self, query: ListQuery) -> tuple[str, dict[str, str]]:
        """The most selective index for the filters, and the filters left to check."""
        filters = {
            "owner": query.owner, "state": query.state, "queue": query.queue, "name": query.name,
        }  # fmt: skip
        filters = {k: v for k, v in filters.items() if v is not None}
        if "owner" in filters and "state" in filters:
            key = owner_state_key(filters.pop("owner"), filters.pop("state"))
        elif "owner" in filters:
            key = index_key("owner", filters.pop("owner"))
        elif "state" in filters:
            key = index_key("state", filters.pop("state"))
        elif "name" in filters:
            key = index_key("name", filters.pop("name"))
        elif "queue" in filters:
            key = index_key("queue", filters.pop("queue"))
        else:
            key = index_key()
        return key, filters

    async def _page_of(
        self, index: str, upper: str, count: int
    ) -> list[tuple[float, dict[str, Any] | None]]:
        """Up to `count` (score, summary) pairs below `upper`, newest first; the summary is
        None for a task pruned while the page was read."""
        flat = await self._page(keys=[index], args=[PREFIX, upper, count, *SUMMARY_FIELDS])
        out: list[tuple[float, dict[str, Any] | None]] = []
        for i in range(0, len(flat), 3):
            row = flat[i + 2]
            record = None
            if row[0] is not None:
                record = decode_record(
                    {k: v for k, v in zip(SUMMARY_FIELDS, row, strict=True) if v}
                )
            out.append((float(flat[i + 1]), record))
        return out

    async def counts(self, owner: str | None = None) -> dict[str, int]:
        raw = await self.client.hgetall(counts_key("owner", owner) if owner else counts_key())
        return {state: max(0, int(raw.get(state, 0))) for state in STATES}

    async def finished_per_minute(self, minutes: int = 10) -> list[dict[str, Any]]:
        now_minute = int(time.time() // 60)
        keys = [done_key(m) for m in range(now_minute - minutes + 1, now_minute + 1)]
        values = await self.client.mget(keys)
        return [
            {"minute": (now_minute - minutes + 1 + i) * 60, "finished": int(v or 0)}
            for i, v in enumerate(values)
        ]

    async def counts_by_queue(self, queue_names: tuple[str, ...]) -> dict[str, dict[str, int]]:
        async with self.client.pipeline(transaction=False) as pipe:
            for name in queue_names:
                pipe.hgetall(counts_key("queue", name))
            rows = await pipe.execute()
        return {
            name: {state: max(0, int(row.get(state, 0))) for state in STATES}
            for name, row in zip(queue_names, rows, strict=True)
        }
