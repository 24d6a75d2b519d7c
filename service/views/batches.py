"""Batches: `POST /api/v1/batches` takes JSON Lines of submissions and answers at once with
a batch id; `GET /api/v1/batches/{id}` its progress, counts and items; `POST .../cancel`.

Each line is `{"task": "<endpoint>", "body": {...}}`, the endpoint one of the submission
paths (`ai/generate`, `knowledge/vectorize`, ...) and the body what it takes. Every item is
validated and checked exactly as its endpoint would (a batch is refused whole, naming
the line and field); the items then run as ordinary tasks of the caller, linked to the
batch (workers/tasks/batches.py).
"""

from __future__ import annotations

import json
import time
from typing import Any, cast
from uuid import uuid4

from aiohttp import web

from service.budgets import check_budget
from service.errors import ApiError, BadRequest, Conflict, NotFound
from service.keys import redis_key, settings_key, task_store_key
from service.middlewares import principal_of
from service.requests import UnsupportedMediaType, load_query, validate
from service.schemas import shared
from service.schemas_batches import (
    BatchCancelResponse,
    BatchCreateQuery,
    BatchQuery,
    BatchResponse,
    BatchSubmitResponse,
)
from service.views.submit import (
    SUBMISSIONS,
    body_schema,
    check_body,
    request_fingerprint,
    split_options,
    submit,
)
from service.views.tasks import visible_task
from workers.core import queues
from workers.core.keys import batch_items_key, batch_key, counts_key
from workers.taskindex.query import ListQuery
from workers.taskindex.record import TERMINAL_STATES
from workers.taskindex.status import iso, summarize

MEDIA_TYPES = ("application/x-ndjson", "application/jsonl", "application/json-lines")
MAX_ITEMS = 10_000
MAX_BYTES = 16 * 1024 * 1024
MAX_ERRORS = 20  # a refused batch names this many bad lines at most


class BatchTooLarge(ApiError):
    status = 413
    message = f"a batch is at most {MAX_BYTES // 2**20} MB"


async def create_batch(request: web.Request) -> web.Response:
    query = load_query(request, shared(BatchCreateQuery))
    if request.content_type not in MEDIA_TYPES:
        raise UnsupportedMediaType(f"a batch is JSON Lines ({MEDIA_TYPES[0]})")
    items = await _read_items(request)
    principal = principal_of(request)
    settings, client = request.app[settings_key], request.app[redis_key]
    if any(item["name"] == queues.GENERATE_AI_RESPONSE for item in items):
        # The owner's budget, once for the batch (each item is checked without it).
        await check_budget(client, settings, principal.owner)
    batch_id = str(uuid4())
    data: dict[str, Any] = {"batch_id": batch_id}
    if query["webhook"]:  # checked before anything is stored: a refusal keeps nothing
        data["webhook"] = {"url": query["webhook"], "events": ["completed"]}
        await check_body(request, queues.RUN_BATCH, data)
    ttl = settings.task_history_ttl
    async with client.pipeline(transaction=True) as pipe:
        pipe.rpush(batch_items_key(batch_id), *(json.dumps(item) for item in items))
        pipe.hset(batch_key(batch_id), mapping={
            "owner": principal.owner, "total": len(items), "created_at": time.time()})  # fmt: skip
        pipe.expire(batch_items_key(batch_id), ttl)
        pipe.expire(batch_key(batch_id), ttl)
        await pipe.execute()
    # An Idempotency-Key names the items and the webhook, not the new id.
    fingerprint = request_fingerprint(queues.RUN_BATCH, [items, query["webhook"]])
    try:
        answer = await submit(request, queues.RUN_BATCH, data, "batch submitted", None,
                              task_id=batch_id, fingerprint=fingerprint)  # fmt: skip
    except ApiError:  # refused (a key reused with another batch, Redis down): keep nothing
        await client.delete(batch_items_key(batch_id), batch_key(batch_id))
        raise
    submitted = json.loads(cast(bytes, answer.body))["task_id"]
    headers = {"Location": f"/api/v1/batches/{submitted}"}
    if submitted != batch_id:  # the same request again: the first batch, this copy dropped
        await client.delete(batch_items_key(batch_id), batch_key(batch_id))
        headers["Idempotent-Replayed"] = "true"
    body = {"batch_id": submitted, "status": "PENDING", "total": len(items),
            "message": "batch accepted"}  # fmt: skip
    return web.json_response(shared(BatchSubmitResponse).dump(body), status=202, headers=headers)


async def _read_items(request: web.Request) -> list[dict[str, Any]]:
    """The batch's lines, each validated and checked as its endpoint would, as what
    `run_batch` publishes: {name, kwargs, options, tags, metadata}."""
    items: list[dict[str, Any]] = []
    errors: dict[str, Any] = {}
    size = 0
    line_no = 0
    while not request.content.at_eof():
        raw = await request.content.readline()
        size += len(raw)
        if size > MAX_BYTES:
            raise BatchTooLarge()
        if not raw.strip():
            continue
        line_no += 1
        if line_no > MAX_ITEMS:
            raise BadRequest("too many items", details={"body": [f"at most {MAX_ITEMS} lines"]})
        try:
            items.append(await _item(request, raw))
        except BadRequest as exc:
            errors[f"line {line_no}"] = exc.details or [exc.message]
            if len(errors) >= MAX_ERRORS:
                break
        except ApiError as exc:  # not the caller's resource, over budget: as its endpoint
            exc.message = f"line {line_no}: {exc.message}"
            raise
    if errors:
        raise BadRequest("invalid batch: nothing was submitted", details=errors)
    if not items:
        raise BadRequest("empty batch", details={"body": ["one submission per line"]})
    return items


async def _item(request: web.Request, raw: bytes) -> dict[str, Any]:
    try:
        line = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BadRequest("malformed JSON", details={"line": [str(exc)[:200]]}) from None
    if not isinstance(line, dict) or set(line) - {"task", "body"}:
        raise BadRequest("a line is {task, body}", details={"line": ['{"task": ..., "body": ...}']})
    if line.get("task") not in SUBMISSIONS:
        raise BadRequest("unknown task", details={"task": [f"one of {', '.join(SUBMISSIONS)}"]})
    task_name, schema = SUBMISSIONS[line["task"]]
    data = validate(body_schema(request, schema), line.get("body", {}))
    if data.get("webhook") is not None:
        raise BadRequest("a batch's webhook is the batch's",
                         details={"webhook": ["set it on the batch (?webhook=)"]})  # fmt: skip
    await check_body(request, task_name, data, budget=False)
    options, _, tags, metadata = split_options(task_name, data)
    if options["eta"] is not None:
        options["eta"] = options["eta"].isoformat()
    return {"name": task_name, "kwargs": data, "options": options, "tags": tags,
            "metadata": metadata}  # fmt: skip


async def get_batch(request: web.Request) -> web.Response:
    batch_id = request.match_info["batch_id"]
    query = load_query(request, shared(BatchQuery))
    record = await _visible_batch(request, batch_id)
    principal = principal_of(request)
    client = request.app[redis_key]
    meta, counts = await _batch_state(client, batch_id)
    page = await request.app[task_store_key].find(ListQuery(
        batch=batch_id, owner=None if principal.is_admin else principal.owner,
        state=query["status"], limit=query["limit"], cursor=query["cursor"],
    ))  # fmt: skip
    body = {
        "batch_id": batch_id, "status": record.get("state"),
        "total": int(meta.get("total") or 0), "published": int(meta.get("published") or 0),
        "ended": int(meta.get("ended") or 0), "counts": counts,
        "cancelled": meta.get("cancelled") == "1",
        "submitted_at": iso(record.get("submitted_at")),
        "finished_at": iso(record.get("finished_at")),
        "items": [summarize(t) for t in page.tasks],
        "next_cursor": page.next_cursor,
    }  # fmt: skip
    return web.json_response(shared(BatchResponse).dump(body))


async def cancel_batch(request: web.Request) -> web.Response:
    batch_id = request.match_info["batch_id"]
    record = await _visible_batch(request, batch_id)
    if record.get("state") in TERMINAL_STATES:
        raise Conflict(f"batch already finished ({record.get('state')})")
    await request.app[redis_key].hset(batch_key(batch_id), "cancelled", "1")
    principal = principal_of(request)
    data = {"action": "cancel", "requested_by": principal.owner,
            "filters": {"batch": batch_id, "owner": record.get("owner")}}  # fmt: skip
    answer = await submit(request, queues.BULK_ACTION, data, "batch cancel submitted", None)
    bulk = json.loads(answer.body)  # type: ignore[arg-type]
    body = {"batch_id": batch_id, "status": "CANCELLING", "bulk_task_id": bulk["task_id"]}
    return web.json_response(shared(BatchCancelResponse).dump(body), status=202,
                             headers={"Location": f"/api/v1/batches/{batch_id}"})  # fmt: skip


async def _visible_batch(request: web.Request, batch_id: str) -> dict[str, Any]:
    record = await visible_task(request, batch_id)
    if record.get("name") != queues.RUN_BATCH:
        raise NotFound("no such batch")
    return record


async def _batch_state(client: Any, batch_id: str) -> tuple[dict[str, Any], dict[str, int]]:
    async with client.pipeline(transaction=False) as pipe:
        pipe.hgetall(batch_key(batch_id))
        pipe.hgetall(counts_key("batch_id", batch_id))
        meta, counts = await pipe.execute()
    return meta, {state: int(n) for state, n in counts.items() if int(n)}
