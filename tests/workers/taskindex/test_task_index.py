"""The task index's state machine: atomic, order-tolerant, counted, prunable."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from workers.core.keys import counts_key, index_key, owner_state_key, task_key
from workers.taskindex.index import TaskIndex

DB = 9


@pytest.fixture
def index(redis_server):
    client = redis.Redis(port=redis_server.port, db=DB, decode_responses=True)
    client.flushdb()
    yield TaskIndex(client, ttl=60)
    client.flushdb()
    client.close()


def new_id() -> str:
    return str(uuid.uuid4())


def counts(index, **dim):
    ((name, value),) = dim.items() if dim else ((None, None),)
    raw = index.client.hgetall(counts_key(name, value) if name else counts_key())
    return {k: int(v) for k, v in raw.items() if int(v)}


def test_a_late_started_never_overwrites_success(index) -> None:
    tid = new_id()
    index.record(tid, "PENDING", 0, name="t", queue="q", owner="alice")
    index.record(tid, "SUCCESS", 0)
    applied, _previous, after = index.record(tid, "STARTED", 0, worker="w1")
    assert (applied, after) == (0, "SUCCESS")
    assert index.client.hget(task_key(tid), "state") == "SUCCESS"
    assert counts(index) == {"SUCCESS": 1}
    assert counts(index, owner="alice") == {"SUCCESS": 1}
    assert counts(index, queue="q") == {"SUCCESS": 1}


def test_repeated_updates_count_once(index) -> None:
    tid = new_id()
    for _ in range(3):
        index.record(tid, "PENDING", 0, name="t")
        index.record(tid, "STARTED", 0)
    assert counts(index) == {"STARTED": 1}
    assert index.client.zcard(index_key("state", "STARTED")) == 1
    assert index.client.zcard(index_key()) == 1


def test_an_older_attempt_cannot_move_a_newer_one(index) -> None:
    tid = new_id()
    index.record(tid, "PENDING", 0, name="t")
    index.record(tid, "STARTED", 0)
    index.record(tid, "RETRY", 0)
    index.record(tid, "STARTED", 1)
    applied, _, after = index.record(tid, "RETRY", 0)  # a stale retry of attempt 0
    assert applied == 0 and after == "STARTED"
    index.record(tid, "SUCCESS", 1)
    assert counts(index) == {"SUCCESS": 1}


def test_a_worker_update_before_the_publish_record_keeps_the_later_state(index) -> None:
    tid = new_id()
    index.record(tid, "STARTED", 0, name="t", queue="q", worker="w")
    index.record(tid, "PENDING", 0, owner="bob", priority="9")  # the publisher, late
    record = index.client.hgetall(task_key(tid))
    assert record["state"] == "STARTED" and record["owner"] == "bob"
    assert index.client.zscore(owner_state_key("bob", "STARTED"), tid) is not None
    assert counts(index, owner="bob") == {"STARTED": 1}


def test_prune_removes_records_and_every_index_entry(index) -> None:
    old, young = new_id(), new_id()
    index.record(old, "PENDING", 0, name="n", queue="q", owner="o", now=time.time() - 120)
    index.record(old, "SUCCESS", 0, now=time.time() - 120)
    index.record(young, "PENDING", 0, name="n", queue="q", owner="o")
    assert index.prune() == 1
    client = index.client
    assert not client.exists(task_key(old)) and client.exists(task_key(young))
    for key in (index_key(), index_key("name", "n"), index_key("queue", "q"),
                index_key("owner", "o"), owner_state_key("o", "SUCCESS"),
                index_key("state", "SUCCESS")):  # fmt: skip
        assert client.zscore(key, old) is None
    assert counts(index) == {"PENDING": 1}
    assert counts(index, owner="o") == {"PENDING": 1}


@pytest.fixture
def backend(index):
    """The indexed result backend, writing where `index` reads."""
    from celery import Celery

    from workers.runtime.backend import backend_url

    port = index.client.connection_pool.connection_kwargs["port"]
    url = f"redis://127.0.0.1:{port}/{DB}"
    app = Celery("backend-test", backend=backend_url(url), broker=url)
    app.conf.update(result_expires=120, result_extended=True)
    yield app.backend
    app.close()


def test_the_result_backend_stores_publishes_and_indexes_in_one_call(index, backend) -> None:
    client = index.client
    tid = new_id()
    waiting = client.pubsub(ignore_subscribe_messages=True)
    waiting.subscribe(backend.get_key_for_task(tid))
    try:
        backend.store_result(tid, None, "STARTED")
        backend.store_result(tid, {"answer": 42}, "SUCCESS")
        # A duplicate delivery's late failure changes neither the result nor the index.
        backend.store_result(tid, ValueError("late"), "FAILURE")

        assert backend.get_task_meta(tid)["result"] == {"answer": 42}
        assert 0 < client.ttl(backend.get_key_for_task(tid)) <= 120
        record = client.hgetall(task_key(tid))
        assert record["state"] == "SUCCESS"
        assert record["result_preview"] == '{"answer": 42}'
        assert "started_at" in record and "finished_at" in record
        published = []
        deadline = time.monotonic() + 5
        while len(published) < 2 and time.monotonic() < deadline:
            message = waiting.get_message(timeout=0.5)
            if message:
                published.append(message["data"])
        assert ['"STARTED"' in published[0], '"SUCCESS"' in published[1]] == [True, True]
    finally:
        waiting.close()


def test_started_claims_for_one_delivery_and_stores_nothing_when_the_claim_is_lost(
    index, backend
) -> None:
    """The claim is taken with the STARTED write (claim_start.lua), right before a task
    runs: cancelled, finished and freshly held tasks are refused."""
    from celery.app.task import Context

    from workers.runtime.backend import CLAIM_FIELD, CLAIM_OUTCOME_FIELD
    from workers.taskindex.lua_scripts import (
        CLAIM_CANCELLED,
        CLAIM_DONE,
        CLAIM_DUPLICATE,
        CLAIM_RUN,
    )

    client = index.client

    def start(task_id: str, token: str) -> int:
        request = Context(id=task_id, retries=0, **{CLAIM_FIELD: token})
        backend.store_result(task_id, None, "STARTED", request=request)
        return getattr(request, CLAIM_OUTCOME_FIELD)

    cancelled, done, held = new_id(), new_id(), new_id()
    for tid in (cancelled, done, held):
        index.record(tid, "PENDING", 0, name="t")
    client.hset(task_key(cancelled), "cancel_requested", "1")
    backend.store_result(done, {"done": 1}, "SUCCESS")

    assert start(cancelled, "a") == CLAIM_CANCELLED
    assert client.hget(task_key(cancelled), "state") == "PENDING"
    assert backend.get_task_meta(cancelled)["status"] == "PENDING"
    assert start(done, "a") == CLAIM_DONE
    assert backend.get_task_meta(done)["status"] == "SUCCESS"

    assert start(held, "first") == CLAIM_RUN
    assert client.hget(task_key(held), "state") == "STARTED"
    assert start(held, "first") == CLAIM_RUN  # the same delivery asking again
    assert start(held, "second") == CLAIM_DUPLICATE
    # A claim nobody refreshed goes stale: the other delivery may run it then.
    client.hset(task_key(held), "claimed_at", time.time() - 60)
    assert start(held, "second") == CLAIM_RUN
    assert client.hget(task_key(held), "claimed_by") == "second"
    assert client.hget(task_key(held), "deliveries") == "3"


# Commands that could write a task's record or message (reads by a running gateway and
# the task-sent event's PUBLISH are left out).
WRITES = {"EVAL", "EVALSHA", "LPUSH", "RPUSH", "HSET", "HMSET", "HINCRBY", "ZADD", "SET"}


def test_a_python_publish_writes_the_record_with_the_message_in_one_script(
    redis_server, celery_app
) -> None:
    """Our app's publish hook leaves the record to the transport, which sends it with the
    message (publish.lua): a message never exists without its record."""
    import threading

    queue = f"tests-onecall-{uuid.uuid4().hex}"
    client = redis.Redis(port=redis_server.port, decode_responses=True)
    seen: list[dict] = []
    ready = threading.Event()

    def watch() -> None:
        with client.monitor() as monitor:
            ready.set()
            for command in monitor.listen():
                seen.append(command)
                if "tests-onecall-stop" in command["command"]:
                    return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert ready.wait(5)
    result = celery_app.send_task("tests.record", args=["x"], queue=queue)
    client.ping()
    client.get("tests-onecall-stop")
    watcher.join(5)
    try:
        top_level = [c["command"] for c in seen if c.get("client_type") != "lua"]
        writes = [c for c in top_level if result.id in c and c.split()[0] in WRITES]
        # (EVALSHA twice when the script had to be loaded first.)
        assert writes and {c.split()[0] for c in writes} == {"EVALSHA"}, writes
        assert not [c for c in top_level if c.startswith("LPUSH") and queue in c]
        assert client.hget(task_key(result.id), "state") == "PENDING"
        assert sum(client.llen(k) for k in client.scan_iter(f"{queue}*")) == 1
    finally:
        client.delete(task_key(result.id), *client.scan_iter(f"{queue}*"))
        client.close()
