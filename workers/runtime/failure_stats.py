"""Failures per minute, for the health check's failure rate.

The task index counts every finished task per minute (`claw:done:<minute>`); this adds
`claw:failed:<minute>` from Celery's `task_failure` signal in every worker process (the
module is imported by `workers.tasks.maintenance`, which every worker loads).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis.exceptions
from celery.signals import task_failure

from workers.core.keys import done_key, failed_key

logger = logging.getLogger(__name__)
KEEP_SECONDS = 7200


def record_failure(client: Any, now: float | None = None) -> None:
    key = failed_key(int((now if now is not None else time.time()) // 60))
    with client.pipeline(transaction=False) as pipe:
        pipe.incr(key)
        pipe.expire(key, KEEP_SECONDS)
        pipe.execute()


def failure_rate(client: Any, now: float, window: float = 1800) -> dict[str, Any]:
    """Finished and failed tasks over the last `window` seconds, and their ratio."""
    last = int(now // 60)
    minutes = range(last - int(window // 60) + 1, last + 1)
    done = client.mget([done_key(m) for m in minutes])
    failed = client.mget([failed_key(m) for m in minutes])
    finished = sum(int(x or 0) for x in done)
    failures = sum(int(x or 0) for x in failed)
    return {
        "window_seconds": window,
        "finished": finished,
        "failed": failures,
        "rate": round(failures / finished, 4) if finished else 0.0,
    }


@task_failure.connect
def _on_task_failure(sender: Any = None, **_: Any) -> None:
    from workers.runtime.clients import redis_client

    try:
        record_failure(redis_client())
    except redis.exceptions.RedisError as exc:
        logger.warning("failure not counted: %s", exc)
