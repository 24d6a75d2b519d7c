"""`GET /healthz`: is Redis reachable, how many workers are live."""

from __future__ import annotations

import time

import redis.exceptions
from aiohttp import web

from service.keys import redis_key
from workers.core.keys import WORKERS_SEEN
from workers.runtime import registry


async def healthz(request: web.Request) -> web.Response:
    client = request.app[redis_key]
    try:
        await client.ping()
        workers = await client.zcount(WORKERS_SEEN, registry.live_since(time.time()), "+inf")
    except (redis.exceptions.RedisError, OSError) as exc:
        return web.json_response(
            {"status": "unavailable", "reason": f"redis unreachable: {type(exc).__name__}"},
            status=503,
            headers={"Retry-After": "2"},
        )
    return web.json_response({"status": "ok", "redis": "ok", "workers": workers})
