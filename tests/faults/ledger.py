"""The fault tests' ledger: every attempt of every task, kept outside the broker's Redis.

Loaded into fault-test workers with `-I tests.faults.ledger`; it records through Celery's
task signals into the Redis server named by CLAW_FAULT_LEDGER_URL (a separate server, so
killing the broker does not touch it).
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any

import redis
from celery.signals import task_postrun, task_prerun

LEDGER_ENV = "CLAW_FAULT_LEDGER_URL"


@functools.cache
def _ledger() -> redis.Redis | None:
    url = os.environ.get(LEDGER_ENV)
    return redis.Redis.from_url(url, decode_responses=True) if url else None


# The attempt this process recorded last, per task: taken back if the task did not run.
_recorded: dict[str, str] = {}


@task_prerun.connect
def _attempt_started(task_id: str = "", task: Any = None, **_: Any) -> None:
    ledger = _ledger()
    if ledger is not None:
        request = task.request
        entry = json.dumps({"start": time.time(), "pid": os.getpid(), "name": task.name,
                            "worker": request.hostname, "retries": request.retries})  # fmt: skip
        _recorded[task_id] = entry
        ledger.rpush(f"attempts:{task_id}", entry)


@task_postrun.connect
def _attempt_ended(task_id: str = "", state: str | None = None, **_: Any) -> None:
    ledger = _ledger()
    entry = _recorded.pop(task_id, None)
    if ledger is None:
        return
    if state == "IGNORED":
        # A delivery that lost its claim (cancelled, a duplicate): the body never ran.
        if entry is not None:
            ledger.lrem(f"attempts:{task_id}", 1, entry)
        return
    ledger.rpush(f"ends:{task_id}", json.dumps({"end": time.time(), "state": state}))
