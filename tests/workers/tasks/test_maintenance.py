"""Housekeeping through a real worker: cleanup prunes exactly what expired; the health
check flags lost tasks, queues without consumers and silent workers, and alerts ops."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from tests.support.waiting import wait_until
from tests.workers.tasks.conftest import run_task
from workers.core import queues
from workers.core.keys import HEALTH_REPORT_KEY, chunks_key, done_key, index_key, task_key
from workers.notify.inbox import read_inbox
from workers.runtime import registry
from workers.runtime.failure_stats import failure_rate, record_failure
from workers.taskindex.index import TaskIndex

QUEUE = "tests_maintenance"
ORPHAN = f"tests_orphan_{uuid.uuid4().hex[:6]}"
OPS = f"ops_{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def maint_worker(redis_url, log_dir):
    from tests.support.processes import start_worker

    env = {
        "HEALTH_EXTRA_QUEUES": ORPHAN, "TASK_TIME_LIMIT": "600", "DEAD_WORKER_AFTER": "3600",
        "HEALTH_HEARTBEAT_TIMEOUT": "30", "OPS_ALERT_CHANNEL": "in_app",
        "OPS_ALERT_RECIPIENT": OPS,
    }  # fmt: skip
    w = start_worker(redis_url, log_dir, queues=f"{QUEUE},notification_default",
                     concurrency=2, name="maintenance", env=env)  # fmt: skip
    yield w
    w.stop()


def test_cleanup_removes_exactly_the_expired_records(maint_worker, celery_app, rclient) -> None:
    tag = uuid.uuid4().hex[:6]
    old = TaskIndex(rclient, ttl=60)
    expired = [f"expired-{tag}-{i}" for i in range(3)]
    fresh = [f"fresh-{tag}-{i}" for i in range(2)]
    for task_id in expired:
        old.record(task_id, "SUCCESS", 0, now=time.time() - 3600, name="tests.x", queue="q")
        rclient.rpush(chunks_key(task_id), "partial output")
    for task_id in fresh:
        TaskIndex(rclient).record(task_id, "SUCCESS", 0, name="tests.x", queue="q")
    dead = f"dead-{tag}@host"
    registry.record_worker(rclient, dead, {"queues": ["default"]})
    rclient.zadd(registry.WORKERS_SEEN, {dead: time.time() - 7200})

    done = run_task(celery_app, queues.CLEANUP_EXPIRED_RESULTS, QUEUE)
    assert done.state == "SUCCESS", done.result
    assert done.result["removed_task_records"] >= len(expired)
    assert dead in done.result["removed_workers"]
    for task_id in expired:
        assert not rclient.exists(task_key(task_id), chunks_key(task_id))
        assert rclient.zscore(index_key(), task_id) is None
        assert rclient.zscore(index_key("name", "tests.x"), task_id) is None
    for task_id in fresh:
        assert rclient.hget(task_key(task_id), "state") == "SUCCESS"
        assert rclient.zscore(index_key(), task_id) is not None
    assert not rclient.hexists(registry.WORKERS_HASH, dead)


def test_health_check_flags_lost_tasks_unconsumed_queues_silent_workers_and_alerts(
    maint_worker, celery_app, rclient
) -> None:
    tag = uuid.uuid4().hex[:6]
    index = TaskIndex(rclient)
    lost, running = f"lost-{tag}", f"running-{tag}"
    index.record(lost, "STARTED", 0, name="tests.x", started_at=repr(time.time() - 1000))
    index.record(running, "STARTED", 0, name="tests.x", started_at=repr(time.time()))
    celery_app.send_task("tests.record", args=[f"tests:{tag}", "never"], queue=ORPHAN)
    silent = f"silent-{tag}@host"
    registry.record_worker(rclient, silent, {"queues": [ORPHAN]})
    rclient.zadd(registry.WORKERS_SEEN, {silent: time.time() - 120})

    done = run_task(celery_app, queues.CHECK_TASK_HEALTH, QUEUE)
    assert done.state == "SUCCESS", done.result
    report = json.loads(rclient.get(HEALTH_REPORT_KEY))
    assert report["checked_at"] == done.result["checked_at"]
    assert report["healthy"] is False
    lost_ids = [t["task_id"] for t in report["lost_tasks"]]
    assert lost in lost_ids and running not in lost_ids
    assert ORPHAN in report["queues_without_consumer"]
    assert report["queue_depths"][ORPHAN] >= 1
    assert silent in report["stale_workers"]
    assert any(lost in p for p in report["problems"])

    # The alert went out through send_notification to the ops user's inbox.
    assert done.result["alert_task_id"]
    alert = wait_until(lambda: read_inbox(rclient, OPS), 15, what="ops alert")[0]
    assert lost in alert["message"] and ORPHAN in alert["message"]
    rclient.zrem(registry.WORKERS_SEEN, silent)
    rclient.hdel(registry.WORKERS_HASH, silent)
    for task_id in (lost, running):
        index.record(task_id, "FAILURE", 1)


def test_failure_rate_counts_the_last_thirty_minutes(rclient) -> None:
    now = 4_000_000_000.0 + 60 * int(uuid.uuid4().int % 10_000)  # minutes no one else uses
    minute = int(now // 60)
    rclient.set(done_key(minute), 8)
    rclient.set(done_key(minute - 29), 2)
    rclient.set(done_key(minute - 30), 50)  # outside the window
    for _ in range(3):
        record_failure(rclient, now)
    record_failure(rclient, now - 31 * 60)  # outside the window
    assert failure_rate(rclient, now) == {
        "window_seconds": 1800, "finished": 10, "failed": 3, "rate": 0.3,
    }  # fmt: skip
