"""Users' own tasks, declared the way the source document (`shared/seed/`) and Celery's
task guide teach: `@celery_app.task(...)` with Celery's options, some on
`BaseTaskWithRetry`, some plain. Loaded into every test worker with `tests.support.tasks`.

Each records its attempts in Redis (`<key>:attempts`, the time of each) so a test sees
from outside what the worker did. All route to the test queue `tests_document` (the
document's examples say `queue="default"`; a queue of the tests' own keeps them apart).
"""

from __future__ import annotations

import time
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from workers.celery_app import celery_app
from workers.runtime.base import BaseTaskWithRetry, TransientError
from workers.runtime.clients import redis_client

QUEUE = "tests_document"
OTHER_QUEUE = "tests_document_other"


def _attempt(key: str) -> int:
    client = redis_client()
    client.rpush(f"{key}:attempts", time.time())
    return int(client.llen(f"{key}:attempts"))


# The document's "define a task" example, as written (but the queue).
@celery_app.task(
    name="app.tasks.custom_tasks.my_task",
    base=BaseTaskWithRetry,
    bind=True,
    max_retries=3,
    queue=QUEUE,
)
def my_task(self: Any, param1: str, param2: int) -> dict:
    return {"param1": param1, "param2": param2, "status": "SUCCESS"}


# The document's "task options" example: every option it lists.
@celery_app.task(
    name="app.tasks.example.task_name",
    base=BaseTaskWithRetry,
    bind=True,
    max_retries=3,
    soft_time_limit=300,
    time_limit=600,
    rate_limit="10/m",
    priority=8,
    queue=OTHER_QUEUE,
)
def task_name(self: Any, key: str) -> dict:
    _attempt(key)
    return {"queue": self.request.delivery_info.get("routing_key"), "priority": self.priority}


# Celery's guide: a plain task with a rate limit (3 a minute), platform-wide.
@celery_app.task(name="tests.doc.limited", rate_limit="3/m", queue=QUEUE)
def limited(key: str) -> int:
    return _attempt(key)


# Celery's guide: automatic retries with exponential backoff, on a plain task.
@celery_app.task(
    name="tests.doc.autoretry",
    autoretry_for=(KeyError,),
    retry_backoff=1,
    retry_jitter=False,
    max_retries=2,
    queue=QUEUE,
)
def autoretry(key: str, failures: int) -> int:
    attempt = _attempt(key)
    if attempt <= failures:
        raise KeyError(f"attempt {attempt}")
    return attempt


class QuotaExceeded(TransientError):
    """Transient by type, but the task says never to retry it."""


# The platform's transient-fault retries, with Celery's backoff options and limits.
@celery_app.task(
    name="tests.doc.transient",
    base=BaseTaskWithRetry,
    bind=True,
    max_retries=1,
    retry_backoff=1,
    retry_jitter=False,
    dont_autoretry_for=(QuotaExceeded,),
    queue=QUEUE,
)
def transient(self: Any, key: str, quota: bool = False) -> None:
    _attempt(key)
    raise QuotaExceeded("quota") if quota else TransientError("upstream busy")


# Only a hard limit, below the app's soft one (300 s): the soft limit comes first (0.9 s);
# this task ignores it, and the hard limit still ends it on time.
@celery_app.task(name="tests.doc.time_limited", time_limit=1, queue=QUEUE)
def time_limited(key: str) -> None:
    _attempt(key)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            time.sleep(0.05)
        except SoftTimeLimitExceeded:
            continue


@celery_app.task(name="tests.doc.soft_limited", soft_time_limit=1, queue=QUEUE)
def soft_limited(key: str) -> str:
    _attempt(key)
    try:
        time.sleep(30)
    except SoftTimeLimitExceeded:
        return "soft limit reached"
    return "slept"


def _hold(key: str) -> None:
    """Say it started, then wait for the test's release."""
    client = redis_client()
    _attempt(key)
    deadline = time.monotonic() + 30
    while not client.exists(f"{key}:release") and time.monotonic() < deadline:
        time.sleep(0.02)


@celery_app.task(name="tests.doc.acks_early", acks_late=False, queue=QUEUE)
def acks_early(key: str) -> None:
    _hold(key)


@celery_app.task(name="tests.doc.acks_late", queue=QUEUE)
def acks_late(key: str) -> None:
    _hold(key)
