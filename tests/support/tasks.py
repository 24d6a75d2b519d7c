"""Tasks that exist only for tests, loaded into test workers with `-I tests.support.tasks`.

They record what happened in Redis (keys under `tests:`) so a test can observe order,
timing and attempts from outside the worker. The `tests.plain_*` and `tests.shared_*`
tasks are declared the way Celery's docs teach (no `base=`): the platform's delivery
guarantees must hold for them as for the built-in tasks.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from workers.celery_app import celery_app
from workers.runtime.base import BaseTaskWithRetry, PermanentError, TransientError
from workers.runtime.clients import redis_client


@celery_app.task(name="tests.record", base=BaseTaskWithRetry)
def record(list_key: str, label: str) -> str:
    redis_client().rpush(list_key, label)
    return label


@celery_app.task(name="tests.block", base=BaseTaskWithRetry, bind=True)
def block(self: Any, started_key: str, release_key: str, timeout: float = 60) -> dict[str, Any]:
    """Say it started (with its pid), then hold the worker slot until released."""
    client = redis_client()
    attempt = client.incr(f"{started_key}:attempts")
    client.rpush(started_key, f"{os.getpid()}:{attempt}")
    deadline = time.monotonic() + timeout
    while not client.exists(release_key):
        if time.monotonic() > deadline:
            raise PermanentError("never released")
        time.sleep(0.02)
    client.incr(f"{started_key}:completions")
    return {"attempt": attempt, "pid": os.getpid()}


@celery_app.task(name="tests.flaky", base=BaseTaskWithRetry, bind=True)
def flaky(self: Any, key: str, fail_times: int, permanent: bool = False) -> int:
    """Fail `fail_times` times (transient unless `permanent`), then succeed."""
    client = redis_client()
    client.rpush(f"{key}:attempts", time.time())
    if client.llen(f"{key}:attempts") <= fail_times:
        if permanent:
            raise PermanentError("bad input, retrying cannot help")
        raise TransientError("upstream busy")
    return self.request.retries


@celery_app.task(name="tests.sleep", base=BaseTaskWithRetry)
def sleep(seconds: float, catch_soft_limit: bool = False) -> str:
    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded:
        if catch_soft_limit:
            return "soft time limit reached"
        raise
    return "slept"


@celery_app.task(name="tests.now", base=BaseTaskWithRetry)
def now() -> float:
    return time.time()


@celery_app.task(name="tests.stream", base=BaseTaskWithRetry, bind=True)
def stream(self: Any, chunks: int, hold_key: str | None = None, hold_after: int = 0) -> dict:
    """Emit `chunks` pieces of output with progress; optionally pause after `hold_after`
    until `hold_key` exists (so a test can subscribe in the middle)."""
    from workers.runtime.progress import publish_chunk, report_progress

    client = redis_client()
    for i in range(chunks):
        if hold_key and i == hold_after:
            deadline = time.monotonic() + 30
            while not client.exists(hold_key) and time.monotonic() < deadline:
                time.sleep(0.02)
        publish_chunk(self.request.id, f"c{i} ")
        report_progress(self.request.id, (i + 1) * 100 / chunks, f"chunk {i + 1}")
    return {"chunks": chunks}


@celery_app.task(name="tests.poison", base=BaseTaskWithRetry)
def poison(attempts_key: str | None = None) -> None:
    """Kill the worker process that runs it, every time (after counting the attempt)."""
    _die(attempts_key)


def _die(attempts_key: str | None) -> None:
    import signal

    if attempts_key:
        redis_client().rpush(attempts_key, os.getpid())
    os.kill(os.getpid(), signal.SIGKILL)


@celery_app.task(name="tests.plain_record")
def plain_record(list_key: str, label: str) -> str:
    redis_client().rpush(list_key, label)
    return label


@shared_task(name="tests.shared_record")
def shared_record(list_key: str, label: str) -> str:
    redis_client().rpush(list_key, label)
    return label


@celery_app.task(name="tests.plain_poison")
def plain_poison(attempts_key: str | None = None) -> None:
    _die(attempts_key)


@celery_app.task(name="tests.plain_transient")
def plain_transient(key: str) -> None:
    """A transient fault in a task without the retry policy: it fails, no retry."""
    redis_client().rpush(f"{key}:attempts", time.time())
    raise TransientError("upstream busy")


# Users' own tasks declared as the source document and Celery's guide teach.
import tests.support.document_tasks  # noqa: E402, F401
