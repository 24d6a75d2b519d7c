"""3. Worker throughput: no-op tasks drained per second by our worker configuration (task
index, events, late acks, prefetch 1) vs. a bare Celery worker with default settings (no
events), same concurrency, same number of queued messages, same Redis.

The queue is filled first, then the worker starts; the rate is taken while the queue goes
from 90% to 10% full (steady state, start-up excluded).

    python -m bench.drain --size small
"""

from __future__ import annotations

import os
import time

from bench.common import QUEUE, Row, Stack, queue_length
from bench.main import cli

SIZES = {"tiny": 150, "small": 4000, "full": 20000}
CONCURRENCY = 2


# Our worker with the bare worker's pool settings: no process recycling (ours recycles
# every 100 tasks, the source's setting), Celery's default prefetch of 4 (ours takes one
# message per process so long AI tasks are not hoarded). What is left is the bookkeeping.
BARE_POOL = {"WORKER_MAX_TASKS_PER_CHILD": "1000000000", "WORKER_PREFETCH_MULTIPLIER": "4"}


def drain_rate(
    stack: Stack, kind: str, queue: str, count: int, env: dict[str, str] | None = None
) -> float:
    client = "bench.our_client" if kind == "ours" else "bench.bare_client"
    stack.run_json(["-m", client, "submit", str(count), queue])
    total = queue_length(stack.redis, queue)
    saved = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})  # the worker's environment is built from this one
    try:
        worker = stack.worker(kind, queue, CONCURRENCY, wait=False)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    high, low = 0.9 * total, 0.1 * total
    t_high = t_low = None
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:
            left = queue_length(stack.redis, queue)
            now = time.perf_counter()
            if t_high is None and left <= high:
                t_high = now
            if left <= low:
                t_low = now
                break
            if not worker.alive():
                raise RuntimeError(f"worker exited:\n{worker.log()[-2000:]}")
            time.sleep(0.01)
    finally:
        stack.stop(worker)
    if t_high is None or t_low is None or t_low <= t_high:
        raise RuntimeError(f"{kind} worker did not drain the queue")
    return (high - low) / (t_low - t_high)


def run(stack: Stack, size: str) -> list[Row]:
    count = SIZES[size]
    ours = drain_rate(stack, "ours", QUEUE, count)
    same_pool = drain_rate(stack, "ours", QUEUE, count, BARE_POOL)
    plain = drain_rate(stack, "bare", "bench_bare", count)
    return [
        Row("drain", "no-op tasks drained, our defaults", ours, plain, "tasks/s", None,
            "bare worker, defaults",
            f"{count} queued, -c {CONCURRENCY} prefork each; ours: -E, index, claim, "
            "acks_late, prefetch 1, max_tasks_per_child 100; bare: no -E, prefetch 4, "
            "no recycling, Redis results"),
        Row("drain", "no-op tasks drained, bare's pool settings", same_pool, plain, "tasks/s",
            ("ge", 1.0), "bare worker, defaults",
            "ours with no recycling and prefetch 4 like the bare worker: the cost of the "
            "index, the claim, STARTED and events alone"),
    ]  # fmt: skip


if __name__ == "__main__":
    cli(run)
