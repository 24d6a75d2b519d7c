"""The `status` endpoint's requests per second vs. a bare aiohttp JSON handler.

Both are loaded by the same closed-loop aiohttp client (in this process) with the same
concurrency for the same time; the gateway answers from the task index and result key in
Redis, the bare handler from memory.

    python -m bench.status --size small
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from bench.common import Row, Stack, requests_per_second, sampling
from bench.main import cli

SIZES = {"tiny": (16, 0.5), "small": (32, 5.0), "full": (32, 10.0)}


def seed_task(stack: Stack) -> str:
    from workers.taskindex.index import TaskIndex

    task_id = str(uuid.uuid4())
    index = TaskIndex(stack.redis)
    now = time.time()
    index.record(task_id, "PENDING", 0, name="bench.noop", queue="bench", owner="dev",
                 submitted_at=repr(now), priority=5)  # fmt: skip
    index.record(task_id, "STARTED", 0, started_at=repr(now + 0.001), worker="w@bench")
    index.record(task_id, "SUCCESS", 0, result_preview="1.0")
    meta = {"status": "SUCCESS", "result": {"ok": True}, "traceback": None, "children": [],
            "date_done": "2025-01-01T00:00:00", "task_id": task_id}  # fmt: skip
    stack.redis.set(f"celery-task-meta-{task_id}", json.dumps(meta))
    return task_id


def run(stack: Stack, size: str) -> list[Row]:
    concurrency, seconds = SIZES[size]
    gateway, base = stack.shared_gateway()
    task_id = seed_task(stack)
    path = f"/api/v1/tasks/status/{task_id}"
    with sampling(gateway.pid) as gw:
        ours, bad = asyncio.run(requests_per_second(base + path, concurrency, seconds))
    bare, bare_base = stack.bare_http()
    try:
        plain, _ = asyncio.run(requests_per_second(bare_base + path, concurrency, seconds))
    finally:
        stack.stop(bare)
    note = (
        f"{concurrency} concurrent clients for {seconds:g} s each; {bad} non-200; gateway "
        f"CPU {gw['cpu_percent']:.0f}% of a core; client in the bench process"
    )
    return [
        Row("status", "GET status/{id}", ours, plain, "req/s", ("ge", 0.5),
            "bare aiohttp JSON handler", note),
    ]  # fmt: skip


if __name__ == "__main__":
    cli(run)
