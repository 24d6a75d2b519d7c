"""Which queues have live consumers, read without blocking the event loop: what tells a
user why tasks wait (`/healthz` degraded, `unconsumed_queues` in the stats, the dashboard's
banner, a pending task's `queue_state`). The reading is the health check's
(`workers.runtime.health.Coverage`); it is shared by every request for a second, so
polling a pending task's status does not cost a round of registry and queue reads each.

A worker that announced it is leaving (Celery's `worker-offline`, sent as its warm shutdown
begins) consumes nothing more, but stays in the registry until its process exits, after its
running tasks: the gateway marks it (`mark_left`, from the live feed) and counts it gone from
then on, until the same hostname beats again (started again, as `make run` does).
"""

from __future__ import annotations

import time
from typing import Any, cast

from aiohttp import web

from workers.core.keys import PREFIX, WORKERS_HASH, WORKERS_SEEN
from workers.core.settings import Settings
from workers.runtime import registry
from workers.runtime.health import Coverage, watched_queues
from workers.runtime.queue_depth import add_depth_reads, depths_from

FRESH_FOR = 1.0  # seconds a reading is shared
# hostname -> when it announced it is leaving (the worker's own clock, as its heartbeats'
# scores in WORKERS_SEEN). Marks are kept a few minutes: past the live window the worker's
# last heartbeat says it is gone anyway.
WORKERS_LEFT = f"{PREFIX}workers:left"
LEFT_KEPT = 300

# The shared reading: {"at": monotonic seconds, "value": Coverage}, made by create_app.
coverage_cache_key = web.AppKey("coverage", dict)


async def mark_left(client: Any, hostname: str, at: float) -> None:
    """`hostname` announced at `at` (its clock) that it is leaving."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.zadd(WORKERS_LEFT, {hostname: at})
        pipe.zremrangebyscore(WORKERS_LEFT, "-inf", at - LEFT_KEPT)
        pipe.expire(WORKERS_LEFT, LEFT_KEPT)
        await pipe.execute()


def has_left(hostname: str, last_seen: float | None, left: dict[str, float]) -> bool:
    """Whether the worker announced leaving after its last heartbeat."""
    at = left.get(hostname)
    return at is not None and (last_seen is None or at >= last_seen)


async def live_workers(client: Any, now: float) -> list[str]:
    """The workers that beat within the live window and have not announced leaving since."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.zrangebyscore(WORKERS_SEEN, registry.live_since(now), "+inf", withscores=True)
        pipe.zrange(WORKERS_LEFT, 0, -1, withscores=True)
        seen, left = await pipe.execute()
    gone = dict(left)
    return [host for host, at in seen if not has_left(host, at, gone)]


async def read_coverage(client: Any, names: tuple[str, ...]) -> Coverage:
    """Live workers, the queues they consume and the queues' depths: two round trips."""
    live = await live_workers(client, time.time())
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
