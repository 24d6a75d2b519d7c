"""Wait for tasks to finish without a thread or a poll loop per waiting request.

The Redis result backend publishes every state write on the channel named after the
result key. One pub/sub connection per gateway process subscribes to the channels of the
tasks someone waits for and wakes the waiters.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio
import redis.exceptions

from workers.core.keys import CELERY_RESULT_KEY as RESULT_KEY
from workers.taskindex.index import TERMINAL_STATES

logger = logging.getLogger(__name__)


class ResultWaiter:
    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._client = client
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._waiters: dict[str, set[asyncio.Future[None]]] = defaultdict(set)
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._listening = asyncio.Event()

    async def start(self) -> None:
        self._reader = asyncio.create_task(self._read(), name="result-waiter")

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            await self._pubsub.aclose()

    @contextlib.asynccontextmanager
    async def watch(self, task_id: str) -> AsyncIterator[asyncio.Future[None]]:
        """A future resolved when the task's result is written as finished."""
        channel = RESULT_KEY.format(task_id)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        async with self._lock:
            first = not self._waiters[channel]
            self._waiters[channel].add(future)
            if first:
                await self._pubsub.subscribe(channel)
                self._listening.set()
        try:
            yield future
        finally:
            async with self._lock:
                waiters = self._waiters.get(channel)
                if waiters is not None:
                    waiters.discard(future)
                    if not waiters:
                        del self._waiters[channel]
                        if not self._waiters:
                            self._listening.clear()
                        with contextlib.suppress(redis.exceptions.RedisError, OSError):
                            await self._pubsub.unsubscribe(channel)

    async def _read(self) -> None:
        while True:
            await self._listening.wait()
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except (redis.exceptions.RedisError, OSError) as exc:
                logger.warning("result waiter lost its connection: %s", exc)
                await asyncio.sleep(1.0)
                continue
            if message and message.get("type") == "message":
                self._dispatch(message["channel"], message["data"])

    def _dispatch(self, channel: str, data: Any) -> None:
        try:
            state = json.loads(data).get("status")
        except (TypeError, ValueError):
            return
        if state not in TERMINAL_STATES:
            return
        for future in self._waiters.get(channel, ()):
            if not future.done():
                future.set_result(None)
