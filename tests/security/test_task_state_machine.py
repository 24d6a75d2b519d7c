"""A Hypothesis state machine over submit / cancel / retry / status, against a real
gateway and a real worker.

Invariants checked after every step, for every task seen so far:
- a finished task (SUCCESS, FAILURE, REVOKED) never changes state, whatever is called
  on it afterwards;
- cancel is idempotent: cancelling a cancelled task answers 409 and it stays REVOKED;
- retry creates exactly one new task: the second retry of the same task answers 409,
  and the new task links back (`retried_from`) as the old one links forward (`retried_as`).

Tasks: AI replies (finish SUCCESS), AI replies with a long countdown (stay PENDING until
cancelled), and `tests.flaky` with `permanent=True` (FAILURE, so retry has work).
The gateway and worker use their own Redis database.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from claw_client import ClawClient
from claw_client.errors import ClawError, Conflict, NotFound
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.security.conftest import database_url
from tests.support.api import ADMIN, API_KEYS
from tests.support.waiting import wait_until
from workers.core.headers import OWNER_HEADER
from workers.core.settings import load_settings
from workers.runtime.celery_config import create_celery_app

pytestmark = pytest.mark.slow

DB = 13
TERMINAL = {"SUCCESS", "FAILURE", "REVOKED"}


@dataclass
class Known:
    kind: str  # "ok", "delayed", "failing"
    final: str | None = None  # the terminal state, once seen
    retried_as: str | None = None
    retried_from: str | None = None


class TaskMachine(RuleBasedStateMachine):
    base_url: str
    celery: Any
    seen: Counter  # what happened over all examples, to show the run meant something

    tasks = Bundle("tasks")

    def __init__(self) -> None:
        super().__init__()
        # The API through the client package: an error answer raises (409: Conflict).
        self.claw = ClawClient(self.base_url, ADMIN, timeout=10)
        self.known: dict[str, Known] = {}

    def teardown(self) -> None:
        # Leave nothing waiting on its countdown for the next example.
        for task_id, task in self.known.items():
            if task.kind == "delayed" and task.final is None:
                with contextlib.suppress(ClawError):
                    self.claw.cancel(task_id)
        self.claw.close()

    # --- helpers -------------------------------------------------------------------

    def status(self, task_id: str) -> dict[str, Any]:
        return self.claw.status(task_id)

    def indexed(self, task_id: str) -> bool:
        try:
            return bool(self.claw.status(task_id))
        except NotFound:
            return False

    def settle(self, task_id: str) -> dict[str, Any]:
        """Wait until a task that will finish by itself has finished."""
        task = self.known[task_id]
        if task.kind == "delayed" and task.final is None:
            return self.status(task_id)
        body = wait_until(
            lambda: (b := self.status(task_id))["status"] in TERMINAL and b,
            30, what=f"{task_id} ({task.kind}) finished",
        )  # fmt: skip
        self.observe(task_id, body["status"])
        return body

    def observe(self, task_id: str, state: str) -> None:
        task = self.known[task_id]
        if task.final is not None:
            assert state == task.final, f"{task_id} was {task.final}, now {state}"
        elif state in TERMINAL:
            task.final = state

    def submit_ai(self, **options: Any) -> str:
        submitted = self.claw.generate(f"sm-{uuid.uuid4().hex[:8]}", "hi", **options)
        assert submitted["status"] == "PENDING", submitted
        return submitted["task_id"]

    # --- rules ---------------------------------------------------------------------

    @rule(target=tasks)
    def submit_ok(self) -> str:
        task_id = self.submit_ai()
        self.known[task_id] = Known("ok")
        return task_id

    @rule(target=tasks)
    def submit_delayed(self) -> str:
        task_id = self.submit_ai(countdown=3600)
        self.known[task_id] = Known("delayed")
        return task_id

    @rule(target=tasks)
    def submit_failing(self) -> str:
        result = self.celery.send_task(
            "tests.flaky", kwargs={"key": f"tests:sm:{uuid.uuid4().hex}", "fail_times": 10**6,
                                   "permanent": True},
            headers={OWNER_HEADER: "ops"},
        )  # fmt: skip
        self.known[result.id] = Known("failing")
        wait_until(lambda: self.indexed(result.id), 10, what="the task indexed")
        return result.id

    @rule(task_id=tasks, second=st.booleans())
    def cancel(self, task_id: str, second: bool) -> None:
        before = self.settle(task_id)
        task = self.known[task_id]
        rounds = 2 if second else 1
        for _ in range(rounds):
            if task.final is not None:
                # Finished (including cancelled before): 409, and the state stays.
                with pytest.raises(Conflict):
                    self.claw.cancel(task_id)
                self.seen[f"cancel {task.final}: 409"] += 1
            else:
                assert before["status"] == "PENDING" and task.kind == "delayed"
                assert self.claw.cancel(task_id)["status"] == "REVOKED"  # 200, not 202
                task.final = "REVOKED"
                self.seen["cancel PENDING: 200"] += 1
            self.observe(task_id, self.status(task_id)["status"])

    @rule(task_id=tasks, second=st.booleans())
    def retry(self, task_id: str, second: bool) -> None:
        self.settle(task_id)
        task = self.known[task_id]
        if task.final in ("FAILURE", "REVOKED") and task.retried_as is None:
            body = self.claw.retry(task_id)
            assert body["retried_from"] == task_id and body["task_id"] != task_id
            task.retried_as = body["task_id"]
            self.seen[f"retry {task.final}: 202"] += 1
            kind = "failing" if task.kind == "failing" else "ok"  # no countdown kept
            self.known[body["task_id"]] = Known(kind, retried_from=task_id)
            if second:
                with pytest.raises(Conflict) as again:
                    self.claw.retry(task_id)
                assert task.retried_as in again.value.message
                self.seen["second retry: 409"] += 1
        else:
            with pytest.raises(Conflict):
                self.claw.retry(task_id)
            self.seen[f"retry {task.final or 'PENDING'}: 409"] += 1
        self.observe(task_id, self.status(task_id)["status"])

    @precondition(lambda self: bool(self.cancelled_not_retried()))
    @rule(data=st.data(), second=st.booleans())
    def retry_cancelled(self, data: st.DataObject, second: bool) -> None:
        """A cancelled task retried: `retry` reaches one only when it happens to draw it
        after its cancel, which a run may never do."""
        self.retry(data.draw(st.sampled_from(self.cancelled_not_retried())), second)

    def cancelled_not_retried(self) -> list[str]:
        return sorted(t for t, k in self.known.items() if k.final == "REVOKED" and not k.retried_as)

    @rule(task_id=tasks)
    def status_of(self, task_id: str) -> None:
        self.observe(task_id, self.status(task_id)["status"])

    @rule(task_id=consumes(tasks))
    def wait_finished(self, task_id: str) -> None:
        self.settle(task_id)

    # --- invariants ----------------------------------------------------------------

    @invariant()
    def finished_tasks_never_change_and_retries_link(self) -> None:
        for task_id, task in list(self.known.items()):
            if task.final is None and task.retried_from is None:
                continue
            body = self.status(task_id)
            self.observe(task_id, body["status"])
            assert body.get("retried_as") == task.retried_as, (task_id, body)
            if task.retried_from is not None:
                assert body.get("retried_from") == task.retried_from, (task_id, body)


@pytest.fixture(scope="module")
def platform(redis_url, log_dir):
    from tests.support.processes import start_gateway, start_worker

    url = database_url(redis_url, DB)
    client = redis.Redis.from_url(url)
    client.flushdb()
    worker = start_worker(url, log_dir, concurrency=2, name="statemachine")
    gateway = start_gateway(url, log_dir, env={"API_KEYS": API_KEYS})
    app = create_celery_app(load_settings(redis_url=url))
    yield gateway, app
    gateway.stop()
    worker.stop()
    app.close()
    client.flushdb()
    client.close()


def machine() -> TaskMachine:
    """A new machine. Passed to Hypothesis instead of the class: a derandomized run's seed
    comes from the source of what it runs, and this one's does not change when the class
    does (so an edit of a rule does not reshuffle which transitions the run reaches)."""
    return TaskMachine()


def test_submit_cancel_retry_status_state_machine(platform) -> None:
    gateway, app = platform
    TaskMachine.base_url = gateway.base_url
    TaskMachine.celery = app
    TaskMachine.seen = Counter()
    began = time.monotonic()
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=25, stateful_step_count=15, deadline=None, database=None,
            derandomize=True, suppress_health_check=list(HealthCheck),
        ),
    )  # fmt: skip
    print(f"state machine: {time.monotonic() - began:.1f}s {dict(TaskMachine.seen)}")
    # The (derandomized) run went through each transition the invariants are about.
    for event in ("cancel PENDING: 200", "cancel REVOKED: 409", "retry FAILURE: 202",
                  "retry REVOKED: 202", "second retry: 409", "retry SUCCESS: 409"):  # fmt: skip
        assert TaskMachine.seen[event] > 0, (event, TaskMachine.seen)
