"""Users' own tasks, written as the source document and Celery's task guide teach, behave
as those documents say, on real workers (tasks: `tests/support/document_tasks.py`).

The document's qualified names of the built-in tasks are aliases; every Celery option on
the decorator holds (rate_limit platform-wide, retries and their backoff, time limits,
acks_late, priority, queue); waiting for a rate-limit slot is waiting, not a retry.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from datetime import datetime

import pytest
import redis
from celery import Celery

from tests.support import document_tasks as doc
from tests.support.processes import ROOT, base_env
from tests.support.waiting import wait_for_state, wait_until
from workers.core.keys import FEED_STREAM, KOMBU_UNACKED_KEY, counts_key, task_key

QUEUES = f"{doc.QUEUE},{doc.OTHER_QUEUE},ai_high_priority"


@pytest.fixture(scope="module")
def doc_worker(redis_url, log_dir):
    from tests.support.processes import start_worker

    worker = start_worker(redis_url, log_dir, queues=QUEUES, concurrency=3, name="doc",
                          env={"OPENAI_API_KEY": ""})  # fmt: skip
    yield worker
    worker.stop()


@pytest.fixture
def key() -> str:
    return f"tests:doc:{uuid.uuid4().hex[:8]}"


def attempts(client: redis.Redis, key: str) -> list[float]:
    return [float(t) for t in client.lrange(f"{key}:attempts", 0, -1)]


def test_the_documents_task_runs_as_written(doc_worker) -> None:
    """`apply_async(...).get(timeout=60)`, `.delay()` and `send_task` by its name."""
    sent = doc.my_task.apply_async(kwargs={"param1": "a", "param2": 1})
    assert sent.get(timeout=60) == {"param1": "a", "param2": 1, "status": "SUCCESS"}
    assert doc.my_task.delay("b", 2).get(timeout=60)["param2"] == 2
    by_name = doc.celery_app.send_task("app.tasks.custom_tasks.my_task", args=["c", 3])
    assert by_name.get(timeout=60)["param1"] == "c"


def test_priority_and_queue_on_the_decorator(doc_worker, rclient, key) -> None:
    result = doc.task_name.delay(key)
    assert result.get(timeout=60) == {"queue": doc.OTHER_QUEUE, "priority": 8}
    record = rclient.hgetall(task_key(result.id))
    assert (record["queue"], record["priority"]) == (doc.OTHER_QUEUE, "8")


def test_the_documents_names_of_the_built_in_tasks_are_aliases(
    doc_worker, rclient, redis_url
) -> None:
    """Routed like the short name and recorded under it, from our app; and run as the
    built-in task when another client sends the document's name as it is."""
    kwargs = {"conversation_id": f"conv-{uuid.uuid4().hex[:6]}", "user_message": "Hello"}
    ours = doc.celery_app.send_task("app.tasks.ai_tasks.generate_ai_response", kwargs=kwargs)
    assert ours.get(timeout=60)["response"]
    record = rclient.hgetall(task_key(ours.id))
    assert (record["name"], record["queue"]) == ("generate_ai_response", "ai_high_priority")

    foreign = Celery("client", broker=redis_url, backend=redis_url)
    try:
        theirs = foreign.send_task(
            "app.tasks.ai_tasks.generate_ai_response", kwargs=kwargs, queue="ai_high_priority"
        )
        assert theirs.get(timeout=60)["response"]
    finally:
        foreign.close()
    assert rclient.hget(task_key(theirs.id), "name") == "generate_ai_response"


async def test_a_declared_rate_limit_holds_and_waiting_is_not_a_retry(
    doc_worker, rclient, key, serve_gateway
) -> None:
    """`rate_limit="3/m"` on a plain task: 3 run, the other 2 wait for the next minute,
    PENDING with the reason and when, in REST and the feed, with no retry counted."""
    retries_before = int(rclient.hget(counts_key(), "RETRY") or 0)
    feed_from = rclient.xinfo_stream(FEED_STREAM)["last-generated-id"]
    sent = [doc.limited.delay(key) for _ in range(5)]

    def waiting() -> list[dict]:
        records = [rclient.hgetall(task_key(r.id)) for r in sent]
        held = [r for r in records if r.get("waiting_reason")]
        return held if len(held) == 2 and len(attempts(rclient, key)) == 3 else []

    held = wait_until(waiting, 30, 0.1, "3 ran and 2 wait")
    first_run = min(attempts(rclient, key))
    for record in held:
        assert record["state"] == "PENDING" and int(record.get("retries") or 0) == 0
        assert "rate limit 3/60s reached" in record["waiting_reason"]
        assert datetime.fromisoformat(record["eta"]).timestamp() >= first_run + 55
        assert int(record["deferrals"]) >= 1
    assert int(rclient.hget(counts_key(), "RETRY") or 0) == retries_before

    gateway = await serve_gateway()
    api = gateway.api(None)
    status, body = await api.get(f"/api/v1/tasks/status/{held[0]['task_id']}")
    assert status == 200 and body["status"] == "PENDING", body
    assert body["waiting_reason"].startswith("rate limit 3/60s") and body["eta"]
    events = [json.loads(e["event"]) for _, e in rclient.xrange(FEED_STREAM, feed_from, "+")]
    waits = [e for e in events if e["type"] == "waiting"]
    assert {e["task_id"] for e in waits} == {r["task_id"] for r in held}
    assert all(e["state"] == "PENDING" and e["eta"] and e["reason"] for e in waits)
    # Nothing else ran meanwhile, and a waiting task can be cancelled like a queued one.
    assert len(attempts(rclient, key)) == 3
    for record in held:
        status, body = await api.post(f"/api/v1/tasks/cancel/{record['task_id']}")
        assert status == 200, body


def test_autoretry_for_with_celerys_backoff(doc_worker, rclient, key) -> None:
    """`autoretry_for`, `retry_backoff=1`, `retry_jitter=False`: retries after 1 s, 2 s."""
    result = doc.autoretry.delay(key, 2)
    assert result.get(timeout=60) == 3
    first, second, third = attempts(rclient, key)
    assert second - first >= 0.9 and third - second >= 1.9
    assert rclient.hget(task_key(result.id), "retries") == "2"


def test_the_retry_policy_follows_celerys_options(doc_worker, rclient, key) -> None:
    """On `BaseTaskWithRetry`: `retry_backoff=1` replaces the platform's minutes-long
    backoff, `max_retries=1` is one retry, `dont_autoretry_for` fails at once."""
    retried = doc.transient.delay(key)
    assert wait_for_state(doc.celery_app, retried.id, {"FAILURE"}, timeout=30).state == "FAILURE"
    first, second = attempts(rclient, key)
    assert 0.9 <= second - first < 10
    quota_key = f"{key}:quota"
    refused = doc.transient.delay(quota_key, quota=True)
    assert wait_for_state(doc.celery_app, refused.id, {"FAILURE"}, timeout=30).state == "FAILURE"
    assert len(attempts(rclient, quota_key)) == 1
    assert rclient.hget(task_key(refused.id), "error_type") == "QuotaExceeded"


def test_time_limits_on_the_decorator(doc_worker, rclient, key) -> None:
    hard = doc.time_limited.delay(key)
    soft = doc.soft_limited.delay(f"{key}:soft")
    started = time.monotonic()
    assert wait_for_state(doc.celery_app, hard.id, {"FAILURE"}, timeout=30).state == "FAILURE"
    assert soft.get(timeout=30) == "soft limit reached"
    assert time.monotonic() - started < 15
    assert rclient.hget(task_key(hard.id), "error_type") == "TimeLimitExceeded"


def test_acks_late_false_acknowledges_before_running(doc_worker, rclient, key) -> None:
    early, late = doc.acks_early.delay(f"{key}:early"), doc.acks_late.delay(f"{key}:late")
    wait_until(
        lambda: attempts(rclient, f"{key}:early") and attempts(rclient, f"{key}:late"), 30, 0.05,
        "both running",
    )  # fmt: skip

    def held() -> set[str]:
        return {json.loads(v)[0]["headers"]["id"] for v in rclient.hvals(KOMBU_UNACKED_KEY)}

    # The early ack is sent by the worker's main process once the pool reports the task
    # accepted, which can come a moment after the task has started running.
    wait_until(lambda: early.id not in held(), 10, 0.05, "the early task acknowledged")
    assert late.id in held()  # still running, not acknowledged
    rclient.set(f"{key}:early:release", 1)
    rclient.set(f"{key}:late:release", 1)
    assert early.get(timeout=30) is None and late.get(timeout=30) is None


BAD_RATE_TASKS = """
from workers.celery_app import celery_app

@celery_app.task(name="tests.doc.bad_rate", rate_limit="ten per minute")
def bad_rate():
    pass
"""


def test_a_worker_refuses_a_rate_limit_it_cannot_enforce(redis_url, tmp_path) -> None:
    (tmp_path / "bad_rate_tasks.py").write_text(BAD_RATE_TASKS)
    env = {**base_env(redis_url), "PYTHONPATH": f"{tmp_path}:{ROOT}"}
    proc = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-Q", "nothing",
         "-I", "bad_rate_tasks", "--without-mingle", "--without-gossip"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode != 0
    assert (
        "tasks with a rate_limit that cannot be enforced: tests.doc.bad_rate: bad rate "
        "'ten per minute'" in proc.stderr + proc.stdout
    )
