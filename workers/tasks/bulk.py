"""Bulk actions: cancel or retry every task a list filter selects, as a task of its own.

`POST /api/v1/tasks/bulk/cancel` and `/bulk/retry` (service/views/bulk.py) submit
`bulk_action` with the filter (its owner fixed to the caller unless an admin asks
otherwise). It walks the index as `GET /list` does (`workers.taskindex.query.walk`), acts on
each task as the single-task endpoints do, and reports its progress in the feed; its
result counts what was done and what was skipped, and why. As `POST /tasks/{id}/retry`,
a retry of an AI task is within its owner's budget (`workers.ai.budgets`): an AI task
whose owner is over budget is skipped (`over_budget`), the others are retried.
"""

from __future__ import annotations

import itertools
import logging
import uuid
from collections import Counter
from typing import Any

from workers.ai.budgets import over_budget
from workers.celery_app import celery_app
from workers.core import queues
from workers.core.headers import RETRIED_FROM_HEADER
from workers.core.keys import task_key
from workers.core.settings import get_settings
from workers.runtime.base import BaseTaskWithRetry
from workers.runtime.clients import redis_client, task_index
from workers.runtime.progress import report_progress
from workers.taskindex.lua_scripts import cancel_call, link_retry_call, source
from workers.taskindex.query import MAX_TASKS, query_of, walk
from workers.taskindex.record import TERMINAL_STATES, TaskRecord, decode_hash

logger = logging.getLogger(__name__)

ACTIONS = ("cancel", "retry")
RETRIABLE = ("FAILURE", "REVOKED")
# Progress is reported every this many tasks, and revokes broadcast in groups this big.
STEP = 100


@celery_app.task(name=queues.BULK_ACTION, base=BaseTaskWithRetry, bind=True)
def bulk_action(self: Any, action: str, filters: dict[str, Any], requested_by: str) -> dict:
    if action not in ACTIONS:
        raise ValueError(f"unknown bulk action {action!r}")
    client = redis_client()
    query = query_of(filters)
    # Counted first, for the progress; tasks that change state meanwhile are skipped.
    matching = (r["task_id"] for r in walk(client, query) if r["task_id"] != self.request.id)
    ids = list(itertools.islice(matching, MAX_TASKS))
    done, skipped = 0, Counter[str]()
    revoke: list[str] = []
    cancel = client.register_script(source("cancel"))
    link = client.register_script(source("link_retry"))
    over: dict[str, bool] = {}  # owner -> over its AI budget
    for n, task_id in enumerate(ids, 1):
        if action == "cancel":
            outcome = _cancel(cancel, task_id, requested_by, self.request.id)
            if outcome == "OK":
                revoke.append(task_id)
        else:
            outcome = _retry(client, link, task_id, over)
        if outcome == "OK":
            done += 1
        else:
            skipped[outcome] += 1
        if n % STEP == 0 or n == len(ids):
            if revoke:
                celery_app.control.revoke(revoke, terminate=False)
                revoke = []
            report_progress(self.request.id, 100 * n / len(ids), f"{done} of {n} {action}")
    logger.info("bulk %s by %s: %s done of %s", action, requested_by, done, len(ids))
    return {"action": action, "matched": len(ids), "done": done, "skipped": dict(skipped),
            "truncated": len(ids) == MAX_TASKS}  # fmt: skip


def _cancel(script: Any, task_id: str, requested_by: str, bulk_id: str) -> str:
    """As `POST /tasks/{id}/cancel` without `terminate`: 'OK', or why it was skipped."""
    keys, args = cancel_call(task_id)
    outcome = str(script(keys=keys, args=args))
    if outcome in TERMINAL_STATES:
        return "finished"
    if outcome != "OK":
        return outcome.lower()  # running, missing
    error = {"type": "Cancelled", "message": f"cancelled by {requested_by} (bulk {bulk_id})"}
    task_index().record(
        task_id, "REVOKED", event={"error": error},
        error_type=error["type"], error_message=error["message"],
    )  # fmt: skip
    return "OK"


def _retry(client: Any, link: Any, task_id: str, over: dict[str, bool]) -> str:
    """As `POST /tasks/{id}/retry`: 'OK', or why it was skipped. `over`: whether an owner
    is over its AI budget, read once per owner in a bulk action (the budget counts finished
    tasks only, so the retries it sends cannot move it meanwhile)."""
    raw = client.hgetall(task_key(task_id))
    if not raw:
        return "missing"
    original = TaskRecord(**{**decode_hash(raw), "task_id": task_id})
    if original.state not in RETRIABLE:
        return "not_failed"
    if original.args_truncated or not original.name:
        return "not_rebuildable"
    if original.name == queues.GENERATE_AI_RESPONSE and original.owner:
        # A retry is a new submission, paid by the task's owner: within its budget too.
        if original.owner not in over:
            over[original.owner] = over_budget(client, get_settings(), original.owner) is not None
        if over[original.owner]:
            return "over_budget"
    new_id = str(uuid.uuid4())
    keys, args = link_retry_call(task_id, new_id)
    if link(keys=keys, args=args):
        return "retried_already"
    options = original.send_options()
    options["headers"][RETRIED_FROM_HEADER] = task_id
    celery_app.send_task(original.name, task_id=new_id, **options)  # type: ignore[arg-type]
    return "OK"
