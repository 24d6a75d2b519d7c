"""The delivery guarantees hold for every task on the app, not only the built-in ones.

Each test runs a task on `BaseTaskWithRetry` (as the built-in tasks are) and the same
task declared the way Celery's docs teach, a plain `@celery_app.task` (and, for the
cancel, a `@shared_task`): see `tests/support/tasks.py`.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.support.waiting import wait_for_state, wait_until
from workers.runtime.base import MAX_WORKER_LOSSES, PlatformTask, tasks_outside_the_contract
from workers.taskindex.index import task_key

RECORD = {"builtin": "tests.record", "plain": "tests.plain_record", "shared": "tests.shared_record"}
POISON = {"builtin": "tests.poison", "plain": "tests.plain_poison"}


def gateway_call(gateway, method: str, path: str) -> tuple[int, dict]:
    request = urllib.request.Request(f"{gateway.base_url}/api/v1/tasks{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize("kind", sorted(RECORD))
def test_a_task_cancelled_while_queued_never_runs_on_workers_started_later(
    kind, gateway, celery_app, start_worker, rclient, key
) -> None:
    queue, ran = f"tests_contract_cancel_{kind}", f"{key}:ran"
    doomed = celery_app.send_task(RECORD[kind], args=[ran, "doomed"], queue=queue)
    status, body = gateway_call(gateway, "POST", f"/cancel/{doomed.id}")
    assert (status, body.get("status")) == (200, "REVOKED"), body

    for round_ in range(2):  # a worker started after the cancel, then another one
        worker = start_worker(queues=queue, concurrency=1, name=f"cancel-{kind}{round_}")
        marker = celery_app.send_task(RECORD[kind], args=[ran, f"after{round_}"], queue=queue)
        wait_for_state(celery_app, marker.id, "SUCCESS")
        worker.stop()
    assert rclient.lrange(ran, 0, -1) == ["after0", "after1"]
    assert gateway_call(gateway, "GET", f"/status/{doomed.id}")[1]["status"] == "REVOKED"
    # Cancelling again is a conflict, not a change.
    assert gateway_call(gateway, "POST", f"/cancel/{doomed.id}")[0] == 409


@pytest.mark.parametrize("kind", ["builtin", "plain"])
def test_a_countdown_beyond_the_visibility_timeout_runs_once_with_two_workers(
    kind, celery_app, start_workers, rclient, key
) -> None:
    """Redis hands an unacknowledged message to a worker again after the visibility
    timeout (1 s; its sweep runs every second), so every worker ends up holding copies of
    a task waiting for its ETA (3 s: two or three sweeps)."""
    queue, ran, countdown = f"tests_contract_once_{kind}", f"{key}:ran", 3
    spec = {"queues": queue, "concurrency": 2, "env": {"BROKER_VISIBILITY_TIMEOUT": "1"}}
    workers = start_workers(*({**spec, "name": f"once-{kind}{n}"} for n in range(2)))
    labels = [f"t{i}" for i in range(6)]
    sent = [
        celery_app.send_task(RECORD[kind], args=[ran, label], queue=queue, countdown=countdown)
        for label in labels
    ]
    # Copies wait for the same ETA as the task: by the time a later one has run, every
    # copy of the others has had its turn.
    marker = celery_app.send_task(
        RECORD[kind], args=[ran, "marker"], queue=queue, countdown=countdown + 3
    )
    for result in sent:
        wait_for_state(celery_app, result.id, "SUCCESS", timeout=30)
    wait_for_state(celery_app, marker.id, "SUCCESS", timeout=30)
    assert sorted(rclient.lrange(ran, 0, -1)) == sorted([*labels, "marker"])
    redelivered = [int(rclient.hget(task_key(r.id), "deliveries") or 0) for r in sent]
    assert redelivered == [1] * len(sent)
    # The copies were there, and dropped: the scenario happened.
    assert any("dropping a duplicate of finished" in w.log() for w in workers)


@pytest.mark.parametrize("kind", sorted(POISON))
def test_a_task_that_kills_its_worker_process_fails_after_three_deaths(
    kind, celery_app, start_worker, rclient, key
) -> None:
    queue, attempts = f"tests_contract_poison_{kind}", f"{key}:attempts"
    start_worker(queues=queue, concurrency=1, name=f"poison-{kind}")
    poison = celery_app.send_task(POISON[kind], args=[attempts], queue=queue)
    wait_for_state(celery_app, poison.id, "FAILURE", timeout=60)
    record = rclient.hgetall(task_key(poison.id))
    assert record["error_type"] == "PoisonTaskError"
    assert f"died {MAX_WORKER_LOSSES} times" in record["error_message"]
    assert rclient.llen(attempts) == MAX_WORKER_LOSSES == 3
    # Failed for good: the same worker goes on with other work.
    after = celery_app.send_task(RECORD[kind], args=[f"{key}:ran", "after"], queue=queue)
    wait_for_state(celery_app, after.id, "SUCCESS")
    assert rclient.llen(attempts) == 3


def test_the_worker_names_the_tasks_outside_the_guarantees_at_start_up(start_worker) -> None:
    worker = start_worker(
        queues="tests_contract_warn", concurrency=1, name="warn",
        extra_modules=("tests.support.opted_out_tasks",),
    )  # fmt: skip

    def warning(prefix: str) -> str | None:
        return next((line for line in worker.log().splitlines() if prefix in line), None)

    opted_out = wait_until(lambda: warning("tasks without the platform's delivery guarantees"), 10)
    assert opted_out.endswith("derive from workers.runtime.base.PlatformTask: tests.opted_out")
    unclaimed = wait_until(lambda: warning("tasks that skip the claim before running"), 10)
    assert unclaimed.endswith("are not checked: tests.unclaimed")


def test_every_task_on_the_app_is_a_platform_task(celery_app) -> None:
    import importlib

    from workers.runtime.celery_config import TASK_MODULES

    for module in (*TASK_MODULES, "tests.support.tasks"):
        importlib.import_module(module)
    assert tasks_outside_the_contract(celery_app.tasks) == ([], [])
    for name in ("tests.plain_record", "tests.shared_record", "generate_ai_response"):
        assert isinstance(celery_app.tasks[name], PlatformTask)
