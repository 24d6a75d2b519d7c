"""Task webhooks over the API: the owner's signing secret (read, rotate), a task's
delivery log, and redelivery. Deliveries themselves are made by workers
(workers/tasks/webhooks.py); see docs/webhooks.md."""

from __future__ import annotations

import json
from typing import Any
from uuid import uuid4

from aiohttp import web
from marshmallow import fields, validate

from service.blocking import with_sync_redis
from service.errors import Conflict, NotFound
from service.keys import publisher_key, redis_key
from service.middlewares import principal_of
from service.requests import load_json
from service.schemas import StrictSchema, shared
from service.views.tasks import task_id_of, visible_task
from workers.core import queues
from workers.core.keys import webhooks_key
from workers.notify import task_webhooks as hooks
from workers.taskindex.record import submission_fields
from workers.taskindex.status import iso


class RedeliverRequest(StrictSchema):
    webhook_id = fields.String(
        load_default=None,
        validate=validate.Length(1, 100),
        metadata={"description": "the delivery to send again (default: the last one)"},
    )


class WebhookSecretResponse(StrictSchema):
    secret = fields.String(required=True, metadata={"description": "whsec_<base64 key>"})
    previous_valid_until = fields.String(
        allow_none=True,
        metadata={"description": "after a rotation: until when the old one signs too (ISO 8601)"},
    )


def _secret_body(found: dict[str, Any]) -> dict[str, Any]:
    return {"secret": found["secret"], "previous_valid_until": iso(found["previous_valid_until"])}


async def webhook_secret(request: web.Request) -> web.Response:
    found = await with_sync_redis(request, hooks.owner_secret, principal_of(request).owner)
    return web.json_response(_secret_body(found))


async def rotate_webhook_secret(request: web.Request) -> web.Response:
    found = await with_sync_redis(request, hooks.rotate_secret, principal_of(request).owner)
    return web.json_response(_secret_body(found))


async def task_webhooks(request: web.Request) -> web.Response:
    task_id = task_id_of(request)
    record = await visible_task(request, task_id)
    raw = await request.app[redis_key].lrange(webhooks_key(task_id), 0, -1)
    return web.json_response(
        {
            "task_id": task_id,
            "webhook": record.get("webhook"),
            "deliveries": [json.loads(attempt) for attempt in raw],
        }
    )


async def redeliver_webhook(request: web.Request) -> web.Response:
    task_id = task_id_of(request)
    record = await visible_task(request, task_id)
    data = await load_json(request, shared(RedeliverRequest))
    if not record.get("webhook"):
        raise Conflict("the task has no webhook")
    raw = await request.app[redis_key].lrange(webhooks_key(task_id), 0, -1)
    attempts = [json.loads(a) for a in raw]
    if data["webhook_id"] is None:
        if not attempts:
            raise Conflict("no delivery to send again yet")
        chosen = attempts[-1]
    else:
        chosen = next((a for a in attempts if a["webhook_id"] == data["webhook_id"]), None)
        if chosen is None:
            raise NotFound("no such delivery of this task")
    kwargs = {"task_id": task_id, "event": chosen["event"], "seq": chosen["seq"],
              "redelivery": True}  # fmt: skip
    delivery_id = str(uuid4())
    name = queues.DELIVER_TASK_WEBHOOK
    fields_ = submission_fields(
        name, [], kwargs, queue=queues.TASK_QUEUES[name], priority=None, owner=None
    )
    await request.app[publisher_key].publish(name, kwargs, task_id=delivery_id, record=fields_)
    body = {"task_id": task_id, "webhook_id": chosen["webhook_id"], "event": chosen["event"],
            "delivery_task_id": delivery_id, "message": "delivery queued"}  # fmt: skip
    # What to poll: the delivery log, where this attempt appears (the task's status does
    # not change, and the delivery task is the platform's, not the caller's).
    return web.json_response(body, status=202,
                             headers={"Location": f"/api/v1/tasks/{task_id}/webhooks"})  # fmt: skip
