"""Lost-message recovery: what counts as lost, and what is left alone."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import redis

from workers.core.keys import task_key
from workers.runtime.recovery import find_lost
from workers.taskindex.index import TaskIndex

DB = 10


@pytest.fixture
def client(redis_server):
    c = redis.Redis(port=redis_server.port, db=DB, decode_responses=True)
    c.flushdb()
    yield c
    c.flushdb()
    c.close()


def pending(client, *, age: float, queue: str = "default") -> str:
    task_id = str(uuid.uuid4())
    TaskIndex(client).record(
        task_id, "PENDING", 0, now=time.time() - age, name="t", queue=queue,
        submitted_at=repr(time.time() - age),
    )  # fmt: skip
    return task_id


def message(task_id: str) -> str:
    return json.dumps({"headers": {"id": task_id}, "body": ""})


def test_finds_old_pending_tasks_whose_message_is_nowhere(client) -> None:
    lost, _young, queued, held = (pending(client, age=age) for age in (60, 1, 60, 60))
    client.lpush("default:4", message(queued))
    client.hset("unacked", "tag-1", json.dumps([json.loads(message(held)), "", "default"]))
    client.zadd("unacked_index", {"tag-1": time.time()})
    found = {r.task_id for r in find_lost(client, time.time(), grace=10)}
    assert found == {lost}


def test_a_claim_that_never_started_is_lost_wherever_its_message_is(client) -> None:
    stuck, running = pending(client, age=60), pending(client, age=60)
    for task_id, claimed_at in ((stuck, time.time() - 60), (running, time.time())):
        client.hset(task_key(task_id), mapping={"claimed": "1", "claimed_at": claimed_at})
        client.hset("unacked", task_id, json.dumps([json.loads(message(task_id)), "", "x"]))
        client.zadd("unacked_index", {task_id: time.time()})
    found = {r.task_id for r in find_lost(client, time.time(), grace=10)}
    assert found == {stuck}


def test_an_unacked_entry_missing_from_the_sweeps_index_counts_as_lost(client) -> None:
    stranded = pending(client, age=60)
    client.hset("unacked", "tag-9", json.dumps([json.loads(message(stranded)), "", "default"]))
    found = {r.task_id for r in find_lost(client, time.time(), grace=10)}
    assert found == {stranded}


def test_an_unclaimed_unacked_entry_older_than_the_grace_period_counts_as_lost(client) -> None:
    """A worker whose consumer was reset (broker outage) before the task started keeps
    the message in `unacked` until the visibility timeout; nobody runs it meanwhile."""
    stranded, fetched = pending(client, age=600), pending(client, age=600)
    for tag, task_id, delivered in (("tag-7", stranded, 300), ("tag-8", fetched, 2)):
        client.hset("unacked", tag, json.dumps([json.loads(message(task_id)), "", "default"]))
        client.zadd("unacked_index", {tag: time.time() - delivered})
    found = {r.task_id for r in find_lost(client, time.time(), 10, visibility=3600)}
    assert found == {stranded}


def test_workers_recover_a_lost_message_themselves_with_no_task_a_minute(
    redis_server, log_dir
) -> None:
    """The housekeeping thread (no Beat, no `recover_lost_tasks` task): a task whose
    message vanished is republished and runs; no housekeeping task is recorded."""
    url = f"redis://127.0.0.1:{redis_server.port}/{DB + 3}"
    client = redis.Redis.from_url(url, decode_responses=True)
    client.flushdb()
    try:
        task_id = str(uuid.uuid4())
        # Accepted (recorded PENDING), its message gone: what a kill between BRPOP and
        # the unacked bookkeeping leaves.
        TaskIndex(client).record(
            task_id, "PENDING", 0, now=time.time() - 60, name="tests.now",
            queue="tests_housekeeping", args="[]", kwargs="{}",
            submitted_at=repr(time.time() - 60),
        )  # fmt: skip
        from tests.support.processes import start_worker as start

        fast = {"TASK_RECOVERY_INTERVAL": "0.5", "TASK_RECOVERY_GRACE": "1"}
        worker = start(url, log_dir, queues="tests_housekeeping", name="housekeeping", env=fast)
        try:
            from tests.support.waiting import wait_until

            wait_until(lambda: client.hget(task_key(task_id), "state") == "SUCCESS", 30,
                       what="the lost task recovered and run")  # fmt: skip
            assert client.hget(task_key(task_id), "recovered_at")
            assert not client.exists("claw:idx:name:recover_lost_tasks")
        finally:
            worker.stop()
    finally:
        client.flushdb()
        client.close()
