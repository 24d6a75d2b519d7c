"""The delivery guarantees hold for every task on the app, not only the built-in ones.

Each test runs a task on `BaseTaskWithRetry` (as the built-in tasks are) and the same
task declared the way Celery's docs teach, a plain `@celery_app.task` (and, for the
cancel, a `@shared_task`): see `tests/support/tasks.py`.
"""

from __future__ import annotations

import pytest

from tests.support.waiting import wait_for_state, wait_until
from workers.runtime.base import MAX_WORKER_LOSSES, PlatformTask, tasks_outside_the_contract
from workers.taskindex.index import task_key

RECORD = {"builtin": "tests.record", "plain": "tests.plain_record", "shared": "tests.shared_record"}
POISON = {"builtin": "tests.poison", "plain": "tests.plain_poison"}


async def gateway_call(gateway, method: str, path: str) -> tuple[int, dict]:
    response = await gateway.client.request(method, f"/api/v1/tasks{path}")
    return response.status, await response.json()


async def test_a_task_cancelled_while_queued_never_runs_on_workers_started_later(
    serve_gateway, celery_app, start_worker, rclient, key
) -> None:
    """Each kind of task (`RECORD`) on a queue of its own; the workers take all three. The
    cancel goes through the gateway (in-process)."""
    gateway = await serve_gateway()
    queues = {kind: f"tests_contract_cancel_{kind}" for kind in RECORD}
    ran = {kind: f"{key}:{kind}:ran" for kind in RECORD}
    doomed = {
        kind: celery_app.send_task(name, args=[ran[kind], "doomed"], queue=queues[kind])
        for kind, name in RECORD.items()
    }
    for kind, task in doomed.items():
        status, body = await gateway_call(gateway, "POST", f"/cancel/{task.id}")
        assert (status, body.get("status")) == (200, "REVOKED"), (kind, body)

    for round_ in range(2):  # a worker started after the cancel, then another one
        worker = start_worker(
            queues=",".join(queues.values()), concurrency=1, name=f"cancel{round_}"
        )
        markers = [
            celery_app.send_task(name, args=[ran[kind], f"after{round_}"], queue=queues[kind])
            for kind, name in RECORD.items()
        ]
        for marker in markers:
            wait_for_state(celery_app, marker.id, "SUCCESS")
        worker.stop()
    for kind, task in doomed.items():
        assert rclient.lrange(ran[kind], 0, -1) == ["after0", "after1"], kind
        assert (await gateway_call(gateway, "GET", f"/status/{task.id}"))[1]["status"] == "REVOKED"
        # Cancelling again is a conflict, not a change.
        assert (await gateway_call(gateway, "POST", f"/cancel/{task.id}"))[0] == 409


def test_a_countdown_beyond_the_visibility_timeout_runs_once_with_two_workers(
    celery_app, start_workers, rclient, key
) -> None:
    """Redis hands an unacknowledged message to a worker again after the visibility
    timeout (1 s; its sweep runs every second), so every worker ends up holding copies of
    a task waiting for its ETA (3 s: two or three sweeps). For a built-in-like task and a
    plain one, each on a queue of its own; both workers take both."""
    kinds = {kind: RECORD[kind] for kind in ("builtin", "plain")}
    queues = {kind: f"tests_contract_once_{kind}" for kind in kinds}
    ran = {kind: f"{key}:{kind}:ran" for kind in kinds}
    countdown = 3
    spec = {
        "queues": ",".join(queues.values()), "concurrency": 2,
        "env": {"BROKER_VISIBILITY_TIMEOUT": "1"},
    }  # fmt: skip
    workers = start_workers(*({**spec, "name": f"once{n}"} for n in range(2)))
    labels = [f"t{i}" for i in range(6)]
    sent = {
        kind: [
            celery_app.send_task(name, args=[ran[kind], label], queue=queues[kind],
                                 countdown=countdown)
            for label in labels
        ]
        for kind, name in kinds.items()
    }  # fmt: skip
    # Copies wait for the same ETA as the task: by the time a later one has run, every
    # copy of the others has had its turn.
    markers = [
        celery_app.send_task(name, args=[ran[kind], "marker"], queue=queues[kind],
                             countdown=countdown + 3)
        for kind, name in kinds.items()
    ]  # fmt: skip
    for result in [r for results in sent.values() for r in results] + markers:
        wait_for_state(celery_app, result.id, "SUCCESS", timeout=30)
    logs = "".join(w.log() for w in workers)
    for kind, name in kinds.items():
        assert sorted(rclient.lrange(ran[kind], 0, -1)) == sorted([*labels, "marker"]), kind
        redelivered = [int(rclient.hget(task_key(r.id), "deliveries") or 0) for r in sent[kind]]
        assert redelivered == [1] * len(labels), kind
        # The copies were there, and dropped: the scenario happened.
        assert f"dropping a duplicate of finished {name}[" in logs, kind


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
