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
from typing import Any, cast

import orjson
import redis.asyncio
import redis.exceptions

from service.redis_pipe import RedisPipe
from workers.core.keys import (
    CELERY_RESULT_KEY,
    SYSTEM_COUNTS_KEY,
    counts_key,
    done_key,
    index_key,
    task_key,
)
from workers.taskindex.index import DEFAULT_TTL
from workers.taskindex.lua_scripts import (
    RecordUpdate,
    cancel_call,
    link_retry_call,
    page_call,
    refuse_call,
    source,
    status_call,
)
from workers.taskindex.query import ListQuery, page_rows, plan
from workers.taskindex.record import STATES, SUMMARY_FIELDS, decode_hash, decode_pairs
from workers.taskindex.status import iso

# What a task id may look like: the gateway's UUIDs, Celery's (uuid4), or a Python
# publisher's own id in the same charset. Never a ':', which would let an id name another
# key of a task (`claw:task:<id>:chunks` is the reply stream of <id>, not a task).
TASK_ID = re.compile(r"[A-Za-z0-9_.-]{1,255}")
SCAN_BATCH = 200
SCAN_BUDGET = 5000
NOT_ACCEPTED = {"type": "NotAccepted", "message": "the broker did not take the task"}
REFUSAL_RETRY = 0.25
REFUSAL_KEEP = 3600.0


# A run of digits orjson may not read exactly: it reads an integer beyond 64 bits as a float.
_LONG_NUMBER = re.compile(r"\d{19}")


def load_meta(text: str) -> Any:
    """Celery's result meta (JSON), by orjson (a quarter of json's time); by json what orjson
    refuses (NaN, Infinity: a result may hold them) or may not read exactly (an integer of
    19 digits or more: json keeps it an int, as the webhook's body and the result had it)."""
    if _LONG_NUMBER.search(text):
        return json.loads(text)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


@dataclass
class Page:
    tasks: list[dict[str, Any]]
    next_cursor: str | None


def is_task_id(value: str) -> bool:
    return TASK_ID.fullmatch(value) is not None


class TaskStore:
    def __init__(
        self, client: redis.asyncio.Redis, ttl: int = DEFAULT_TTL, pipe: RedisPipe | None = None
    ) -> None:
        """`pipe`, when given, carries the hot reads (a task's status, a list page)."""
        self.client = client
        self.ttl = ttl
        self._record = client.register_script(source("record"))
        self._cancel = client.register_script(source("cancel"))
        self._link = client.register_script(source("link_retry"))
        self._refuse = client.register_script(source("refuse"))
        # Reads: sent again on a new connection when the first was lost (redis-py retries).
        if pipe is not None:
            self._page: Any = pipe.register_script(source("page"), retry=True)
            self._status: Any = pipe.register_script(source("status"), retry=True)
        else:
            self._page = client.register_script(source("page"))
            self._status = client.register_script(source("status"))
        # Refusals not written yet (Redis was down): task id -> when it was refused.
        self.unwritten_refusals: dict[str, float] = {}

    async def get(self, task_id: str) -> dict[str, Any] | None:
        """The task's record; None for an unknown id or one no task can have."""
        if not is_task_id(task_id):
            return None
        raw = await self.client.hgetall(task_key(task_id))
        return decode_hash(cast(dict[str, str], raw)) if raw else None

    async def get_with_result(self, task_id: str) -> tuple[dict[str, Any] | None, Any]:
        """The record, and Celery's result meta unless the task failed or was revoked (the
        record has all a failure needs; the meta would add its traceback again)."""
        if not is_task_id(task_id):
            return None, None
        keys, args = status_call(task_id, CELERY_RESULT_KEY.format(task_id))
        flat, meta = await self._status(keys=keys, args=args)
        if not flat:
            return None, None
        it = iter(flat)
        return decode_pairs(zip(it, it, strict=True)), (load_meta(meta) if meta else None)

    async def record(
        self, task_id: str, state: str | None, event: dict[str, Any] | None = None, **fields: Any
    ) -> list[Any]:
        update = RecordUpdate(
            task_id=task_id, state=state, fields=fields, event=event, ttl=self.ttl
        )
        keys, args = update.call()
        return list(await self._record(keys=keys, args=args))

    async def request_cancel(self, task_id: str) -> str:
        if not is_task_id(task_id):
            return "MISSING"
        keys, args = cancel_call(task_id)
        return str(await self._cancel(keys=keys, args=args))

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
        keys, args = refuse_call(task_id)
        if await self._refuse(keys=keys, args=args):
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
        keys, args = link_retry_call(task_id, new_id)
        existing = await self._link(keys=keys, args=args)
        return existing or None

    async def find(self, query: ListQuery) -> Page:
        """Newest first, filtered; `next_cursor` continues after the last task looked at.

        One index range answers it when one index covers the filters. Otherwise the most
        selective index is walked in batches and the rest checked on each record, up to a
        budget per request; a short page then comes with a cursor to go on from
        (`workers.taskindex.query`).
        """
        name_indexed = query.name is None or bool(
            await self.client.exists(index_key("name", query.name))
        )
        chosen = plan(query, name_indexed)
        upper = f"({query.cursor}" if query.cursor is not None else "+inf"
        tasks: list[dict[str, Any]] = []
        scanned = 0
        more = False
        last_seq: float | None = None
        while len(tasks) < query.limit and scanned < SCAN_BUDGET:
            wanted = query.limit - len(tasks)
            # Records to check: twice what is still wanted at first (most filters keep
            # most of what the index holds), then whole batches.
            size = min(SCAN_BATCH, 2 * wanted + 10 if scanned == 0 else SCAN_BATCH)
            size = size if chosen.checks else wanted
            batch = await self._page_of(chosen.index, upper, size + 1)
            more = len(batch) > size
            batch = batch[:size]
            for i, (score, record) in enumerate(batch):
                last_seq = score
                scanned += 1
                if chosen.matches(record):
                    tasks.append(record)  # type: ignore[arg-type]
                if len(tasks) == query.limit:
                    more = more or i < len(batch) - 1
                    break
            if not more:
                break
            upper = f"({int(last_seq or 0)}"
        next_cursor = str(int(last_seq)) if more and last_seq is not None else None
        return Page(tasks, next_cursor)

    async def _page_of(
        self, index: str, upper: str, count: int
    ) -> list[tuple[float, dict[str, Any] | None]]:
        """Up to `count` (score, summary) pairs below `upper`, newest first."""
        keys, args = page_call(index, upper, count, SUMMARY_FIELDS)
        return page_rows(await self._page(keys=keys, args=args))

    async def counts(self, owner: str | None = None, system: bool = False) -> dict[str, int]:
        """Tasks per state: one owner's, or everyone's (without the platform's housekeeping
        tasks unless `system`)."""
        if owner:
            raw = await self.client.hgetall(counts_key("owner", owner))
            return {state: max(0, int(raw.get(state, 0))) for state in STATES}
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hgetall(counts_key())
            pipe.hgetall(SYSTEM_COUNTS_KEY)
            everyone, housekeeping = await pipe.execute()
        left_out = {} if system else housekeeping
        return {
            state: max(0, int(everyone.get(state, 0)) - int(left_out.get(state, 0)))
            for state in STATES
        }

    async def finished_per_minute(self, minutes: int = 10) -> list[dict[str, Any]]:
        now_minute = int(time.time() // 60)
        keys = [done_key(m) for m in range(now_minute - minutes + 1, now_minute + 1)]
        values = await self.client.mget(keys)
        return [
            {"minute": iso((now_minute - minutes + 1 + i) * 60), "finished": int(v or 0)}
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
