"""Time limits, delays, and redelivery of a task whose worker process was killed."""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.waiting import wait_for_state, wait_until

QUEUE = "tests_delivery"


@pytest.fixture(scope="module")
def delivery_worker(redis_url, log_dir):
    from tests.support.processes import start_worker

    w = start_worker(redis_url, log_dir, queues=QUEUE, concurrency=2, name="delivery")
    yield w
    w.stop()


def test_soft_time_limit_raises_inside_the_task(delivery_worker, celery_app) -> None:
    result = celery_app.send_task(
        "tests.sleep", args=[10, True], queue=QUEUE, soft_time_limit=0.5, time_limit=5
    )
    done = wait_for_state(celery_app, result.id, {"SUCCESS", "FAILURE"}, timeout=10)
    assert (done.state, done.result) == ("SUCCESS", "soft time limit reached")


def test_hard_time_limit_kills_the_task(delivery_worker, celery_app) -> None:
    started = time.monotonic()
    result = celery_app.send_task("tests.sleep", args=[30], queue=QUEUE, time_limit=1)
    done = wait_for_state(celery_app, result.id, {"SUCCESS", "FAILURE"}, timeout=15)
    assert done.state == "FAILURE"
    assert "TimeLimitExceeded" in repr(done.result)
    assert time.monotonic() - started < 10


def test_countdown_delays_execution(delivery_worker, celery_app) -> None:
    sent = time.time()
    result = celery_app.send_task("tests.now", queue=QUEUE, countdown=1)
    ran_at = wait_for_state(celery_app, result.id, "SUCCESS", timeout=15).result
    assert ran_at >= sent + 1


def test_eta_delays_execution(delivery_worker, celery_app) -> None:
    eta = datetime.now(UTC) + timedelta(seconds=1)
    result = celery_app.send_task("tests.now", queue=QUEUE, eta=eta)
    ran_at = wait_for_state(celery_app, result.id, "SUCCESS", timeout=15).result
    assert ran_at >= eta.timestamp()


def test_task_of_a_killed_worker_process_is_redelivered_and_completes_once(
    delivery_worker, celery_app, rclient, key
) -> None:
    started, release = f"{key}:started", f"{key}:release"
    result = celery_app.send_task("tests.block", args=[started, release], queue=QUEUE)
    first = wait_until(lambda: rclient.lindex(started, 0), 20, what="first attempt")
    pid = int(first.split(":")[0])
    assert pid in delivery_worker.pool_pids()

    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: rclient.llen(started) >= 2, 30, what="the task to be redelivered")
    rclient.set(release, 1)

    done = wait_for_state(celery_app, result.id, {"SUCCESS", "FAILURE"}, timeout=20)
    assert done.state == "SUCCESS"
    assert done.result["attempt"] == 2
    assert rclient.get(f"{started}:completions") == "1"
    assert rclient.llen(started) == 2
