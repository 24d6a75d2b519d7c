"""Owners' schedules: a submission that Beat fires on a cron expression or an interval.

A schedule's arguments are checked when it is created exactly as its submission's body
is (the endpoint's schema, the model and recipient rules, and the knowledge bases it
names: the caller's, `service.ownership`); each firing is the creator's task
(workers/runtime/schedules.py). Another owner's schedule is 404, as a foreign task is.
"""

from __future__ import annotations

import re
import time
from typing import Any
from uuid import uuid4

from aiohttp import web

from service.blocking import in_pool
from service.errors import ApiError, BadRequest, NotFound
from service.keys import celery_key, settings_key
from service.middlewares import principal_of
from service.requests import load_json, validate
from service.schemas import shared
from service.schemas_schedules import ScheduleListResponse, ScheduleRequest, ScheduleResponse
from service.views.submit import (
    SUBMISSIONS,
    body_schema,
    check_body,
    claim_idempotency,
    request_fingerprint,
    split_options,
)
from workers.core import queues
from workers.core.headers import OWNER_HEADER, SCHEDULE_HEADER
from workers.runtime.schedules import (
    ScheduleInvalid,
    ScheduleStore,
    TooManySchedules,
    parse_cron,
    shortest_gap,
    zone_of,
)
from workers.taskindex.status import iso

_ID = re.compile(r"[0-9a-f-]{1,64}")


class TooMany(ApiError):
    status = 409
    message = "too many schedules"


async def create_schedule(request: web.Request) -> web.Response:
    principal = principal_of(request)
    settings = request.app[settings_key]
    body = await load_json(request, shared(ScheduleRequest))
    task_name, arguments, priority = await _checked_arguments(
        request, body["task"], body["arguments"]
    )
    try:
        zone = zone_of(body["timezone"])
        sched = parse_cron(body["cron"], zone) if body["cron"] else None
    except ScheduleInvalid as exc:
        raise BadRequest("invalid schedule", details={exc.field: [exc.message]}) from None
    gap = shortest_gap(sched) if sched is not None else body["interval"]
    if gap < settings.schedule_min_interval:
        field = "cron" if sched is not None else "interval"
        raise BadRequest("invalid schedule", details={field: [
            f"fires every {gap:g} s; at least {settings.schedule_min_interval:g} s apart"
        ]})  # fmt: skip
    schedule_id = str(uuid4())
    store = ScheduleStore(request.app[celery_key])
    # The same request twice (an Idempotency-Key): the first schedule, not a second one.
    first = await claim_idempotency(
        request, principal.owner, schedule_id, request_fingerprint("schedules", body)
    )
    if first is not None:
        found = await in_pool(request, store.get, first)
        if found is not None:
            return web.json_response(
                shared(ScheduleResponse).dump(found),
                headers={"Idempotent-Replayed": "true", "Location": f"/api/v1/schedules/{first}"},
            )
        # The key's first request has not created it (yet, or it failed): made under the
        # id the key is bound to, so the same request twice is still one schedule.
        schedule_id = first
    options: dict[str, Any] = {
        "queue": queues.TASK_QUEUES[task_name],
        "headers": {OWNER_HEADER: principal.owner, SCHEDULE_HEADER: schedule_id},
    }
    if priority is not None:
        options["priority"] = priority
    spec = {
        "id": schedule_id, "task": body["task"], "arguments": body["arguments"],
        "cron": body["cron"], "interval": body["interval"], "timezone": zone,
        "owner": principal.owner, "created_at": iso(time.time()),
    }  # fmt: skip
    try:
        created = await in_pool(request, lambda: store.create(
            spec, task=task_name, kwargs=arguments, options=options,
            sched=sched or body["interval"], limit=settings.schedules_per_owner,
        ))  # fmt: skip
    except TooManySchedules:
        raise TooMany(
            f"at most {settings.schedules_per_owner} schedules per owner; delete one first"
        ) from None
    return web.json_response(
        shared(ScheduleResponse).dump(created),
        status=201,
        headers={"Location": f"/api/v1/schedules/{schedule_id}"},
    )


async def list_schedules(request: web.Request) -> web.Response:
    """The caller's schedules; an admin key's: everyone's."""
    principal = principal_of(request)
    store = ScheduleStore(request.app[celery_key])
    found = await in_pool(request, store.owned_by, None if principal.is_admin else principal.owner)
    return web.json_response(shared(ScheduleListResponse).dump({"schedules": found}))


async def get_schedule(request: web.Request) -> web.Response:
    found = await _own_schedule(request)
    return web.json_response(shared(ScheduleResponse).dump(found))


async def delete_schedule(request: web.Request) -> web.Response:
    found = await _own_schedule(request)
    store = ScheduleStore(request.app[celery_key])
    await in_pool(request, store.delete, found["id"], found["owner"])
    return web.Response(status=204)


async def _own_schedule(request: web.Request) -> dict[str, Any]:
    """The schedule the path names, if the caller's (or the caller is an admin)."""
    schedule_id = request.match_info["schedule_id"]
    principal = principal_of(request)
    found = None
    if _ID.fullmatch(schedule_id):
        store = ScheduleStore(request.app[celery_key])
        found = await in_pool(request, store.get, schedule_id)
    if found is None or not (principal.is_admin or found["owner"] == principal.owner):
        raise NotFound("schedule not found")
    return found


async def _checked_arguments(
    request: web.Request, endpoint: str, arguments: dict[str, Any]
) -> tuple[str, dict[str, Any], int | None]:
    """The task, its keyword arguments and priority, checked as the submission to
    `endpoint` is."""
    task_name, schema = SUBMISSIONS[endpoint]
    try:
        data = validate(body_schema(request, schema), arguments)
    except BadRequest as exc:
        raise BadRequest(exc.message, details={"arguments": exc.details}) from None
    # A firing carries none of a submission's own options but its priority.
    options, webhook, tags, metadata = split_options(task_name, data)
    refused = {"countdown": options["countdown"], "eta": options["eta"], "webhook": webhook,
               "tags": tags, "metadata": metadata}  # fmt: skip
    given = [name for name, value in refused.items() if value is not None]
    if given:
        raise BadRequest("invalid schedule", details={"arguments": {
            name: ["not available for a schedule"] for name in given
        }})  # fmt: skip
    # As a submission is checked, but for the budget: a schedule spends nothing yet.
    await check_body(request, task_name, data, budget=False)
    return task_name, data, options["priority"]
