"""The health report's lost tasks: STARTED past their time limit, but for a batch, whose
record stays STARTED until its items have ended (workers/tasks/batches.py)."""

from __future__ import annotations

import time
import uuid

from workers.core import queues
from workers.core.keys import index_key, task_key
from workers.runtime.health import lost_tasks


def started(client, name: str, seconds_ago: float) -> str:  # type: ignore[no-untyped-def]
    task_id = f"health-{uuid.uuid4()}"
    client.hset(task_key(task_id), mapping={
        "task_id": task_id, "name": name, "state": "STARTED",
        "started_at": time.time() - seconds_ago, "worker": "w@test",
    })  # fmt: skip
    client.zadd(index_key("state", "STARTED"), {task_id: time.time()})
    return task_id


def test_a_batch_running_longer_than_a_time_limit_is_not_lost(rclient) -> None:
    stuck = started(rclient, "send_notification", 10_000)
    batch = started(rclient, queues.RUN_BATCH, 10_000)
    fresh = started(rclient, "send_notification", 1)
    try:
        lost = {t["task_id"] for t in lost_tasks(rclient, time.time(), default_limit=300)}
        assert stuck in lost and batch not in lost and fresh not in lost
    finally:
        for task_id in (stuck, batch, fresh):
            rclient.delete(task_key(task_id))
            rclient.zrem(index_key("state", "STARTED"), task_id)
