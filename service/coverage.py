"""Which queues have live consumers, read without blocking the event loop: what tells a
user why tasks wait (`/healthz` degraded, `unconsumed_queues` in the stats, the dashboard's
banner, a pending task's `queue_state`). The reading is the health check's
(`workers.runtime.health.Coverage`); it is shared by every request for a second, so
polling a pending task's status does not cost a round of registry and queue reads each.
"""

from __future__ import annotations

import time
from typing import Any, cast

from aiohttp import web

from workers.core.keys import WORKERS_HASH, WORKERS_SEEN
from workers.core.settings import Settings
from workers.runtime import registry
from workers.runtime.health import Coverage, watched_queues
from workers.runtime.queue_depth import add_depth_reads, depths_from

FRESH_FOR = 1.0  # seconds a reading is shared

# The shared reading: {"at": monotonic seconds, "value": Coverage}, made by create_app.
coverage_cache_key = web.AppKey("coverage", dict)


async def read_coverage(client: Any, names: tuple[str, ...]) -> Coverage:
    """Live workers, the queues they consume and the queues' depths: two round trips."""
    since = registry.live_since(time.time())
    live = cast(list[str], await client.zrangebyscore(WORKERS_SEEN, since, "+inf"))
    async with client.pipeline(transaction=False) as pipe:
        if live:
            pipe.hmget(WORKERS_HASH, live)
        add_depth_reads(pipe, names)
        replies = await pipe.execute()
    described = replies.pop(0) if live else []
    return Coverage.of(live, described, depths_from(replies, names))


async def coverage(app: web.Application, client: Any, settings: Settings) -> Coverage:
    """The reading of at most FRESH_FOR seconds ago (one per gateway process)."""
    cached = app[coverage_cache_key]
    now = time.monotonic()
    if cached.get("at", -FRESH_FOR) + FRESH_FOR <= now:
        cached["value"] = await read_coverage(client, watched_queues(settings))
        cached["at"] = now
    return cast(Coverage, cached["value"])
