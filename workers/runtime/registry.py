"""Which workers are alive, kept in Redis by the workers themselves.

Each worker writes its description when it is ready and refreshes its score on every
event heartbeat (every 2 s with `-E`). A worker is live while its last heartbeat is
younger than `LIVE_WINDOW`. The gateway reads this without asking any worker, so a health
check never waits on a broadcast.
"""

from __future__ import annotations

import json
import time
from typing import Any

from workers.core.keys import WORKERS_HASH, WORKERS_SEEN

LIVE_WINDOW = 10.0


def record_worker(client: Any, hostname: str, info: dict[str, Any]) -> None:
    now = time.time()
    with client.pipeline() as pipe:
        pipe.hset(WORKERS_HASH, hostname, json.dumps({**info, "hostname": hostname}))
        pipe.zadd(WORKERS_SEEN, {hostname: now})
        pipe.execute()


def record_heartbeat(client: Any, hostname: str) -> None:
    client.zadd(WORKERS_SEEN, {hostname: time.time()})


def record_offline(client: Any, hostname: str) -> None:
    with client.pipeline() as pipe:
        pipe.zrem(WORKERS_SEEN, hostname)
        pipe.hdel(WORKERS_HASH, hostname)
        pipe.execute()


def live_since(now: float | None = None) -> float:
    return (now if now is not None else time.time()) - LIVE_WINDOW


def prune_dead(client: Any, older_than: float) -> list[str]:
    """Forget workers whose last heartbeat is older than `older_than` (epoch seconds)."""
    dead = client.zrangebyscore(WORKERS_SEEN, "-inf", older_than)
    if dead:
        with client.pipeline() as pipe:
            pipe.zrem(WORKERS_SEEN, *dead)
            pipe.hdel(WORKERS_HASH, *dead)
            pipe.execute()
    return list(dead)
