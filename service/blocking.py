"""Blocking calls (Celery control, the sync Redis client of code shared with the workers)
run in the gateway's bounded thread pool, never on the event loop."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web

from service.keys import executor_key, sync_redis_key

T = TypeVar("T")


async def in_pool(request: web.Request, call: Callable[..., T], *args: Any) -> T:
    """`call(*args)` in the gateway's thread pool."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(request.app[executor_key], functools.partial(call, *args))


async def with_sync_redis(request: web.Request, call: Callable[..., T], *args: Any) -> T:
    """`call(client, *args)` with the gateway's blocking Redis client, in the pool."""
    return await in_pool(request, call, request.app[sync_redis_key], *args)
