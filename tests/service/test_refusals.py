"""A submission answered 503 never runs, even when its publish reached Redis after all."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import redis
import redis.asyncio

from service.task_store import TaskStore
from tests.support.waiting import async_wait_until
from workers.core.keys import task_key
from workers.dev.embedded_redis import EmbeddedRedis
from workers.taskindex.index import TaskIndex


async def test_a_refused_task_is_cancelled_now_or_as_soon_as_redis_is_back(tmp_path) -> None:
    server = EmbeddedRedis(tmp_path, appendonly=True).start()
    sync = redis.Redis(port=server.port, decode_responses=True)
    client = redis.asyncio.Redis(port=server.port, decode_responses=True, socket_timeout=1)
    store = TaskStore(client, ttl=600)
    retrying = asyncio.get_running_loop().create_task(store.retry_refusals())
    try:
        # The publish ran but its reply was lost: the record exists.
        reached, never = str(uuid.uuid4()), str(uuid.uuid4())
        TaskIndex(sync).record(reached, "PENDING", 0, name="t", queue="q")
        await store.refuse(reached)
        assert sync.hget(task_key(reached), "cancel_requested") == "1"
        assert sync.hget(task_key(reached), "state") == "REVOKED"
        # The publish never ran: nothing is written for it.
        await store.refuse(never)
        assert not sync.exists(task_key(never))

        # Redis dies with the record of a task whose reply was lost, and comes back.
        late = str(uuid.uuid4())
        TaskIndex(sync).record(late, "PENDING", 0, name="t", queue="q")
        server.stop()
        await store.refuse(late)
        assert late in store.unwritten_refusals
        server.start()
        await async_wait_until(
            lambda: asyncio.sleep(0, late not in store.unwritten_refusals), 10, what="refusal"
        )
        assert sync.hget(task_key(late), "cancel_requested") == "1"
        assert sync.hget(task_key(late), "state") == "REVOKED"
    finally:
        retrying.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await retrying
        await client.aclose()
        sync.close()
        server.stop()
