"""Task status, listing, statistics, cancel and retry."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from typing import Any
from uuid import uuid4

from aiohttp import web

from service.auth import Principal
from service.blocking import in_pool, with_sync_redis
from service.budgets import check_budget
from service.coverage import coverage
from service.errors import Conflict, Forbidden, NotFound
from service.keys import (
    celery_key,
    publisher_key,
    redis_key,
    settings_key,
    task_store_key,
)
from service.middlewares import principal_of
from service.requests import load_query
from service.responses import json_response
from service.schemas import (
    CancelQuery,
    CancelResponse,
    RetryResponse,
    StatsQuery,
    StatsResponse,
    StatusQuery,
    TaskListQuery,
    shared,
)
from service.task_store import ListQuery, TaskStore, is_task_id
from workers.core import queues
from workers.core.headers import RETRIED_FROM_HEADER
from workers.core.keys import HEALTH_REPORT_KEY, rate_limit_keys
from workers.core.lua import lua_file
from workers.runtime.health import health_report as check_health
from workers.runtime.priority import DEFAULT_PRIORITY, MAX_PRIORITY
from workers.runtime.queue_depth import priority_keys
from workers.runtime.rate_limit import parse_rate
from workers.taskindex.index import TERMINAL_STATES, task_key
from workers.taskindex.record import TaskRecord, submission_fields
from workers.taskindex.status import iso, status_document, summarize

logger = logging.getLogger(__name__)


def status_body(record: dict[str, Any], meta: dict | None, principal: Principal) -> dict:
    """What `TaskStatusResponse` documents. The record's values are typed as the schema
    types them already (tests/workers/taskindex/test_status_document.py), so the document
    is not dumped again: that was a sixth of a status request's time."""
    return status_document(record, meta, admin=principal.is_admin)


def task_id_of(request: web.Request) -> str:
    """The `{task_id}` of the path; 404 (as for an unknown task) when no task can have it."""
    task_id = request.match_info["task_id"]
    if not is_task_id(task_id):
        raise NotFound("no such task")
    return task_id


async def visible_task(request: web.Request, task_id: str) -> dict[str, Any]:
    """The task's record if this caller may see it; 404 alike for unknown and foreign."""
    record = await request.app[task_store_key].get(task_id)
    return _check_visible(record, principal_of(request))


def _check_visible(record: dict[str, Any] | None, principal: Principal) -> dict[str, Any]:
    if record is None or not (principal.is_admin or record.get("owner") == principal.owner):
        raise NotFound("no such task")
    return record


async def task_status(request: web.Request) -> web.Response:
    task_id = task_id_of(request)
    # (A status without parameters, what clients poll, skips the query schema.)
    explain = bool(request.query_string) and load_query(request, shared(StatusQuery))["explain"]
    record, meta = await request.app[task_store_key].get_with_result(task_id)
    principal = principal_of(request)
    record = _check_visible(record, principal)
    body = status_body(record, meta, principal)
    if body["status"] == "PENDING" and body.get("queue"):
        # Clients poll a pending task: only the cheap reading unless `explain` is asked.
        body["queue_state"] = await queue_state(request, body, explain=explain)
    return json_response(body)


# A pending task's message is looked for among this many of its own priority's oldest
# messages; further back, its place is not counted (the queue's depth still is).
POSITION_SCAN = 1000
# The built-in tasks' platform-wide rates, set for the workers by these settings (their
# `global_rate_setting`). A rate on a task's own decorator is known to workers only.
RATE_SETTINGS = {
    queues.GENERATE_AI_RESPONSE: "ai_rate_limit", queues.VECTORIZE_DOCUMENT: "vectorize_rate_limit",
}  # fmt: skip


async def queue_state(
    request: web.Request, body: dict[str, Any], *, explain: bool
) -> dict[str, Any]:
    """Why a PENDING task waits: its queue's depth and live consumers (read at most once a
    second per gateway); with `explain`, how many messages are ahead of its own (or that a
    worker holds it: prefetched, or until its ETA), and its name's rate limit with the
    slots taken now."""
    client = request.app[redis_key]
    settings = request.app[settings_key]
    queue = body["queue"]
    if not explain:
        covered = await coverage(request.app, client, settings)
        return {"queue": queue, "waiting": covered.depths.get(queue, 0),
                "consumers": covered.consumers.get(queue, 0)}  # fmt: skip
    priority = body.get("priority")
    step = MAX_PRIORITY - (priority if isinstance(priority, int) else DEFAULT_PRIORITY)
    lists = priority_keys(queue)
    rate = None
    if setting := RATE_SETTINGS.get(body.get("name") or ""):
        with contextlib.suppress(ValueError):  # (a bad rate stops the workers, not this)
            rate = parse_rate(getattr(settings, setting))
    keys = [*lists, *([rate_limit_keys(body["name"], "")[0]] if rate else [])]
    own = max(0, min(step, len(lists) - 1)) + 1
    window = int(rate.window * 1000) if rate else ""
    args = [body["task_id"], POSITION_SCAN, len(lists), own, window]
    covered, (before, found, length, total, used) = await asyncio.gather(
        coverage(request.app, client, settings),
        client.register_script(_queue_position())(keys=keys, args=args),
    )
    return {
        "queue": queue,
        "waiting": total,  # read now (the coverage's depths are up to a second old)
        "consumers": covered.consumers.get(queue, 0),
        "ahead": before + found if found >= 0 else None,
        # Looked through its whole list and not there: a worker has it.
        "held": found < 0 and length <= POSITION_SCAN,
        "rate_limit": str(rate) if rate else None,
        "rate_limit_used": used if rate else None,
    }


@functools.cache
def _queue_position() -> str:
    """workers/runtime/scripts/queue_position.lua, read once (not on the event loop per call)."""
    return lua_file("workers.runtime", "queue_position")


async def task_list(request: web.Request) -> web.Response:
    query = load_query(request, shared(TaskListQuery))
    principal = principal_of(request)
    owner = query["owner"] if principal.is_admin else principal.owner
    page = await request.app[task_store_key].find(
        ListQuery(
            limit=query["limit"], cursor=query["cursor"], state=query["status"],
            queue=query["queue"], name=query["name"], owner=owner,
            hidden=frozenset() if query["system"] else queues.SYSTEM_TASKS,
            labels=shared(TaskListQuery).labels(query),
        )
    )  # fmt: skip
    # Each row as TaskSummary documents it (typed already: not dumped again).
    tasks = [summarize(t) for t in page.tasks]
    body = {"tasks": tasks, "count": len(tasks), "next_cursor": page.next_cursor}
    return json_response(body)


USER_HIDDEN_STATS = ("queues", "tasks_per_minute")


async def compute_stats(
    app: web.Application, owner: str | None, system: bool = False
) -> dict[str, Any]:
    """The stats body for one owner (None: everyone; the housekeeping tasks counted only
    with `system`). Shared with the live feed."""
    store = app[task_store_key]
    client = app[redis_key]
    counts, per_minute, covered = await asyncio.gather(
        store.counts(owner, system),
        store.finished_per_minute(10),
        coverage(app, client, app[settings_key]),
    )
    body = {
        "total_tasks": sum(counts.values()),
        **{state.lower(): n for state, n in counts.items()},
        "workers": covered.live_workers,
        "queues": covered.depths,
        "unconsumed_queues": covered.unconsumed,
        "tasks_per_minute": per_minute,
    }
    return shared(StatsResponse).dump(body)


async def task_stats(request: web.Request) -> web.Response:
    principal = principal_of(request)
    system = load_query(request, shared(StatsQuery))["system"]
    if principal.is_admin:
        return json_response(await compute_stats(request.app, None, system))
    # A user sees its own counts; queue depths and everyone's throughput are the
    # operators'. The live worker count stays: it is one of the seed's fields.
    body = await compute_stats(request.app, principal.owner)
    return json_response({k: v for k, v in body.items() if k not in USER_HIDDEN_STATS})


async def task_cancel(request: web.Request) -> web.Response:
    task_id = task_id_of(request)
    query = load_query(request, shared(CancelQuery))
    principal = principal_of(request)
    record = await visible_task(request, task_id)
    store: TaskStore = request.app[task_store_key]
    outcome = await store.request_cancel(task_id)
    if outcome in TERMINAL_STATES:
        raise Conflict(f"task already finished ({outcome})")
    if outcome == "RUNNING":
        if not query["terminate"]:
            raise Conflict("task is already running; an admin may pass terminate=true")
        if not principal.is_admin:
            raise Forbidden("only admins may terminate a running task")
        await _broadcast_revoke(request, task_id, terminate=True)
        body = {"task_id": task_id, "status": "REVOKING", "message": "termination requested"}
        return web.json_response(
            shared(CancelResponse).dump(body), status=202,
            headers={"Location": f"/api/v1/tasks/status/{task_id}"},
        )  # fmt: skip
    if outcome == "MISSING":
        raise NotFound("no such task")
    error = {"type": "Cancelled", "message": f"cancelled by {principal.owner}"}
    await store.record(
        task_id, "REVOKED", event={"error": error},
        error_type=error["type"], error_message=error["message"],
    )  # fmt: skip
    # Workers holding it (reserved, or waiting for its ETA) drop it now; any other
    # worker finds the cancel in the index before running it.
    await _broadcast_revoke(request, task_id, terminate=False)
    previous = record.get("state")
    body = {"task_id": task_id, "status": "REVOKED", "message": f"cancelled while {previous}"}
    return web.json_response(shared(CancelResponse).dump(body))


async def _broadcast_revoke(request: web.Request, task_id: str, *, terminate: bool) -> None:
    control = request.app[celery_key].control
    await in_pool(request, lambda: control.revoke(task_id, terminate=terminate, signal="SIGTERM"))


async def task_retry(request: web.Request) -> web.Response:
    task_id = task_id_of(request)
    record = await visible_task(request, task_id)
    state = record.get("state")
    if state not in ("FAILURE", "REVOKED"):
        raise Conflict(f"only FAILURE or REVOKED tasks can be retried, this one is {state}")
    if record.get("args_truncated"):
        raise Conflict("the task's arguments were too large to keep; submit it again")
    owner = record.get("owner")
    if record.get("name") == queues.GENERATE_AI_RESPONSE and isinstance(owner, str):
        # A retry is a new submission, paid by the task's owner: within its budget too.
        await check_budget(request.app[redis_key], request.app[settings_key], owner)
    store: TaskStore = request.app[task_store_key]
    new_id = str(uuid4())
    existing = await store.link_retry(task_id, new_id)
    if existing:
        raise Conflict(f"task was already retried as {existing}")
    original = TaskRecord(**{**record, "task_id": task_id})
    options = original.send_options()
    options["headers"][RETRIED_FROM_HEADER] = task_id
    fields = submission_fields(
        record["name"], options["args"], options["kwargs"], queue=original.queue,
        priority=original.priority, owner=original.owner, timelimit=original.timelimit,
        retried_from=task_id, webhook=original.webhook, tags=original.tags,
        metadata=original.metadata,
    )  # fmt: skip
    try:
        await request.app[publisher_key].publish(
            record["name"], task_id=new_id, record=fields, **options
        )
    except Exception:
        await store.client.hdel(task_key(task_id), "retried_as")
        raise
    body = {"task_id": new_id, "retried_from": task_id, "status": "PENDING",
            "message": "task submitted again"}  # fmt: skip
    return web.json_response(
        shared(RetryResponse).dump(body), status=202,
        headers={"Location": f"/api/v1/tasks/status/{new_id}"},
    )  # fmt: skip


async def health_report(request: web.Request) -> web.Response:
    """The last `check_task_health` report; before Beat's first run (every 30 minutes),
    one made now, with the same check (and stored, as Beat's would be)."""
    raw = await request.app[redis_key].get(HEALTH_REPORT_KEY)
    if raw is None:
        report = await with_sync_redis(
            request, check_health, request.app[settings_key], time.time()
        )
    else:
        report = json.loads(raw)
    checked = report.get("checked_at") or time.time()
    report["age_seconds"] = round(time.time() - checked, 3)
    report["checked_at"] = iso(checked)
    return web.json_response(report)
