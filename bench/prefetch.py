"""Why our workers take one message per process (WORKER_PREFETCH_MULTIPLIER=1, the
default), measured: short tasks queued behind a long one.

Two workers with one process each; the queue holds one long task (an LLM reply's
seconds) and then short ones. With prefetch 1 the worker running the long task holds
nothing else, so the other runs every short task at once. With Celery's default of 4 the
first worker also reserves the next three short tasks, which wait until the long one is
done although the other worker is idle. The row is the last short task's finish after the
first task started; the baseline is the same with prefetch 4. (The drain bench shows
what prefetch 1 costs when every task is short.)

    python -m bench.prefetch --size small
"""

from __future__ import annotations

import json

from bench.common import QUEUE, Row, Stack, wait_until
from bench.main import cli
from workers.core.keys import CELERY_RESULT_KEY, task_key

# (seconds of the long task, short tasks behind it)
SIZES = {"tiny": (0.5, 8), "small": (1.0, 20), "full": (2.0, 40)}


def succeeded(stack: Stack, key: str) -> bool:
    return json.loads(stack.redis.get(key) or "{}").get("status") == "SUCCESS"


def last_short_done(stack: Stack, prefetch: int, long_s: float, shorts: int) -> float:
    """Seconds from the first task's start to the last short task's end."""
    from workers.celery_app import celery_app

    stack.flush()
    env = {"WORKER_PREFETCH_MULTIPLIER": str(prefetch), "WORKER_MAX_TASKS_PER_CHILD": "1000000"}
    workers = [stack.worker("ours", QUEUE, 1, wait=False, **env) for _ in range(2)]
    try:
        for worker in workers:  # both idle and waiting for messages before any is sent
            stack.wait_worker(worker)
        ids = [celery_app.send_task("bench.sleep", args=[long_s], queue=QUEUE).id]
        ids += [celery_app.send_task("bench.noop", queue=QUEUE).id for _ in range(shorts)]
        keys = [CELERY_RESULT_KEY.format(i) for i in ids]
        # (A result key holds STARTED, with the worker's pid, while its task runs.)
        wait_until(lambda: all(succeeded(stack, k) for k in keys), 60 + long_s, "every task")
        first = min(float(stack.redis.hget(task_key(i), "started_at") or "inf") for i in ids)
        done = [json.loads(stack.redis.get(k) or "{}")["result"] for k in keys[1:]]
    finally:
        for worker in workers:
            stack.stop(worker)
    return max(done) - first


def run(stack: Stack, size: str) -> list[Row]:
    long_s, shorts = SIZES[size]
    ours = last_short_done(stack, 1, long_s, shorts)
    hoarding = last_short_done(stack, 4, long_s, shorts)
    note = (
        f"two workers -c 1, one {long_s:g} s task then {shorts} no-op tasks; with prefetch 4 "
        f"the long task's worker holds the next three, which wait for it"
    )
    return [
        Row("prefetch", "last short task done behind a long one, prefetch 1", ours,
            hoarding, "s", None, "prefetch 4 (Celery's default)", note),
    ]  # fmt: skip


if __name__ == "__main__":
    cli(run)
