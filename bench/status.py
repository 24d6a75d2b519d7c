"""The read endpoints' requests per second (`status`, `list`, `stats`) vs. a bare aiohttp
JSON handler, each driven by wrk (one thread, 32 keep-alive connections) in one run.

The gateway answers from the task index and result key in Redis, the bare handler (on
uvloop like the gateway) from memory: the ratio is what the gateway's work per request
costs.

    python -m bench.status --size small
"""

from __future__ import annotations

import json
import time
import uuid

from bench.common import Row, Stack, sampling
from bench.loadgen import wrk
from bench.main import cli

SIZES = {"tiny": 1.0, "small": 5.0, "full": 10.0}
CONNECTIONS = 32
API = "/api/v1/tasks"


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
    seconds = SIZES[size]
    gateway, base = stack.shared_gateway()
    task_id = seed_task(stack)
    for _ in range(49):  # a page of 50 for `list`
        seed_task(stack)
    paths = {
        "status": f"{API}/status/{task_id}",
        "list": f"{API}/list?limit=50&status=SUCCESS",
        "stats": f"{API}/stats",
    }
    ours = {}
    with sampling(gateway.pid) as gw:
        for name, path in paths.items():
            ours[name] = wrk(base + path, seconds, connections=CONNECTIONS)
    bare, bare_base = stack.bare_http()
    try:
        plain = wrk(bare_base + paths["status"], seconds, connections=CONNECTIONS)
    finally:
        stack.stop(bare)
    common = (
        f"wrk -t1 -c{CONNECTIONS} {seconds:g} s each, one gateway process; gateway CPU "
        f"{gw['cpu_percent']:.0f}% of a core over the three; baseline: {plain.note()}"
    )
    return [
        Row("status", "GET status/{id}", ours["status"].per_second, plain.per_second, "req/s",
            ("ge", 0.5), "bare aiohttp JSON handler", f"{ours['status'].note()}; {common}"),
        Row("status", "GET list?limit=50&status=SUCCESS", ours["list"].per_second,
            plain.per_second, "req/s", None, "bare aiohttp JSON handler",
            f"{ours['list'].note()}; a page of 50 records"),
        Row("status", "GET stats", ours["stats"].per_second, plain.per_second, "req/s", None,
            "bare aiohttp JSON handler", ours["stats"].note()),
    ]  # fmt: skip


if __name__ == "__main__":
    cli(run)
