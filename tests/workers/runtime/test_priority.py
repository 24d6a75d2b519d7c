"""Priority 0-9 with 9 the highest, on Redis, as the product promises."""

from __future__ import annotations

import pytest

from tests.support.waiting import wait_until

QUEUE = "tests_priority"


@pytest.fixture(scope="module")
def prio_worker(redis_url, log_dir):
    """One slot: while a task holds it, the others wait in the queue in priority order."""
    from tests.support.processes import start_worker

    w = start_worker(redis_url, log_dir, queues=QUEUE, concurrency=1, name="prio")
    yield w
    w.stop()


def test_priority_nine_tasks_start_before_waiting_priority_zero_tasks(
    prio_worker, celery_app, rclient, key
) -> None:
    started, release, order = f"{key}:started", f"{key}:release", f"{key}:order"
    celery_app.send_task("tests.block", args=[started, release], queue=QUEUE)
    wait_until(lambda: rclient.llen(started), 20, what="the busy task to start")

    for i in range(20):
        celery_app.send_task("tests.record", args=[order, f"p0-{i}"], queue=QUEUE, priority=0)
    for i in range(5):
        celery_app.send_task("tests.record", args=[order, f"p9-{i}"], queue=QUEUE, priority=9)
    rclient.set(release, 1)

    wait_until(lambda: rclient.llen(order) == 25, 30, what="all 25 tasks to run")
    ran = rclient.lrange(order, 0, -1)
    assert sorted(ran[:5]) == [f"p9-{i}" for i in range(5)], ran
    # Within one priority, first in, first out.
    assert ran[5:] == [f"p0-{i}" for i in range(20)]


def test_middle_priorities_keep_their_order(prio_worker, celery_app, rclient, key) -> None:
    started, release, order = f"{key}:started", f"{key}:release", f"{key}:order"
    celery_app.send_task("tests.block", args=[started, release], queue=QUEUE)
    wait_until(lambda: rclient.llen(started), 20, what="the busy task to start")
    for p in (3, 7, None, 1, 8):
        label = "default" if p is None else f"p{p}"
        celery_app.send_task("tests.record", args=[order, label], queue=QUEUE, priority=p)
    rclient.set(release, 1)
    wait_until(lambda: rclient.llen(order) == 5, 30, what="all tasks to run")
    # No priority given means the product default, 5.
    assert rclient.lrange(order, 0, -1) == ["p8", "p7", "default", "p3", "p1"]
