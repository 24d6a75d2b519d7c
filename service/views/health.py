"""`GET /healthz` (and its alias `GET /health`): is Redis reachable, how many workers are
live; `degraded` (200) with the reasons when tasks would wait (no live worker, a queue with
waiting tasks and no consumer), 503 when Redis is unreachable.

Not `GET /api/v1/tasks/health`: that is the operators' task-system report (admin)."""

from __future__ import annotations

from typing import Any

import redis.exceptions
from aiohttp import web

from service.coverage import read_coverage
from service.keys import redis_key, settings_key
from workers.runtime.health import watched_queues


async def healthz(request: web.Request) -> web.Response:
    client = request.app[redis_key]
    try:
        # Read now, not the shared reading: a probe must see Redis as it is.
        covered = await read_coverage(client, watched_queues(request.app[settings_key]))
    except (redis.exceptions.RedisError, OSError) as exc:
        reason = f"redis unreachable: {type(exc).__name__}"
        failover = await sentinel_view(client)
        return web.json_response(
            {"status": "unavailable", "reason": f"{reason}; {failover}" if failover else reason},
            status=503,
            headers={"Retry-After": "2"},
        )
    # Degraded is still 200: the gateway itself serves, a load balancer keeps it.
    reasons = covered.reasons()
    body: dict[str, Any] = {"status": "degraded" if reasons else "ok", "redis": "ok",
                            "workers": covered.live_workers}  # fmt: skip
    if reasons:
        body["reasons"] = reasons
    return web.json_response(body)


async def health(request: web.Request) -> web.Response:
    """`GET /health`: the same answer as `/healthz`, under the name people try first."""
    return await healthz(request)


async def sentinel_view(client: Any) -> str | None:
    """Under Sentinel (REDIS_URL=sentinel://...): what the sentinels say of the primary
    while it cannot be reached, e.g. that they are failing over. None otherwise."""
    pool = client.connection_pool
    manager = getattr(pool, "sentinel_manager", None)
    if manager is None:
        return None
    for sentinel in manager.sentinels:
        try:
            state = await sentinel.sentinel_master(pool.service_name)
        except (redis.exceptions.RedisError, OSError):
            continue
        flags = set(str(state.get("flags", "")).split(","))
        address = f"{state.get('ip')}:{state.get('port')}"
        if "failover_in_progress" in flags or flags & {"s_down", "o_down"}:
            return f"Sentinel: primary {address} down, failover in progress"
        return f"Sentinel: primary {address}"
    return "Sentinel: no sentinel reachable"
