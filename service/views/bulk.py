"""Bulk cancel and retry by filter (`POST /api/v1/tasks/bulk/{cancel,retry}`).

The filter is `GET /list`'s; a dry run answers how many tasks it selects. Otherwise the
action is submitted as a task of its own (`workers/tasks/bulk.py`), owned by the caller:
its id comes back at once, its progress is in the feed, its result counts what was done
and why the rest was skipped: a retry of an AI task whose owner is over its budget is
skipped there (`over_budget`), as `POST /tasks/{id}/retry` answers 429; the bulk action
itself spends no budget, so it is not refused for one.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web

from service.errors import BadRequest
from service.keys import task_store_key
from service.middlewares import principal_of
from service.requests import load_json
from service.schemas import BulkRequest, shared
from service.views.submit import submit
from workers.core import queues
from workers.taskindex.query import MAX_TASKS, ListQuery, query_of

FILTERS = ("status", "queue", "name", "owner", "tag", "metadata")
PAGE = 500


async def bulk_cancel(request: web.Request) -> web.Response:
    return await _bulk(request, "cancel")


async def bulk_retry(request: web.Request) -> web.Response:
    return await _bulk(request, "retry")


async def _bulk(request: web.Request, action: str) -> web.Response:
    schema = shared(BulkRequest)
    body = await load_json(request, schema)
    principal = principal_of(request)
    if not any(body.get(name) for name in FILTERS):
        raise BadRequest(
            "give at least one filter", details={"status": ["or queue, name, tag, metadata"]}
        )
    filters: dict[str, Any] = {
        "status": body["status"], "queue": body["queue"], "name": body["name"],
        "owner": body["owner"] if principal.is_admin else principal.owner,
        "labels": list(schema.labels(body)), "system": body["system"],
    }  # fmt: skip
    if body["dry_run"]:
        matched = await _count(request, query_of(filters))
        body = {"action": action, "dry_run": True, "matched": matched}
        return web.json_response({**body, "truncated": matched >= MAX_TASKS})
    data = {"action": action, "filters": filters, "requested_by": principal.owner}
    return await submit(request, queues.BULK_ACTION, data, f"bulk {action} submitted", None)


async def _count(request: web.Request, query: ListQuery) -> int:
    """How many tasks the filter selects (up to MAX_TASKS), page by page."""
    store = request.app[task_store_key]
    cursor, matched = None, 0
    while matched < MAX_TASKS:
        page = await store.find(dataclasses.replace(query, limit=PAGE, cursor=cursor))
        matched += len(page.tasks)
        if page.next_cursor is None:
            break
        cursor = int(page.next_cursor)
    return min(matched, MAX_TASKS)
