"""Task submission: validate, publish by name, answer the task id (or the result)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from uuid import uuid4

import redis.exceptions
from aiohttp import web
from marshmallow import Schema

from service.auth import Principal
from service.budgets import check_budget
from service.errors import BadRequest, Forbidden, Unprocessable
from service.keys import (
    publisher_key,
    redis_key,
    redis_pipe_key,
    settings_key,
    task_store_key,
    waiter_key,
)
from service.middlewares import principal_of
from service.ownership import check_submission
from service.requests import load_json, load_query
from service.schemas import AiGenerateRequest, SubmitResponse, WaitQuery, shared
from service.schemas_tasks import (
    DeleteVectorsRequest,
    SendNotificationRequest,
    UpdateKnowledgeBaseRequest,
    VectorizeRequest,
)
from service.views.stream import stream_task
from service.views.tasks import status_body
from workers.core import queues
from workers.core.headers import OWNER_HEADER
from workers.core.keys import idempotency_key
from workers.core.queues import TASK_QUEUES
from workers.core.settings import Settings
from workers.notify.targets import TargetRefused, check_literal
from workers.notify.task_webhooks import EVENTS as WEBHOOK_EVENTS
from workers.notify.validation import webhook_policy
from workers.runtime.priority import DEFAULT_PRIORITY
from workers.taskindex.index import TERMINAL_STATES
from workers.taskindex.record import submission_fields

logger = logging.getLogger(__name__)

OPTIONS = ("priority", "countdown", "eta")
IDEMPOTENCY_TTL = 24 * 3600
IDEMPOTENCY_HEADER = "Idempotency-Key"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def submission(task_name: str, schema: type[Schema], message: str) -> Handler:
    """A handler that submits `task_name` with the body validated by `schema`."""

    async def handler(request: web.Request) -> web.StreamResponse:
        query = load_query(request, shared(WaitQuery), constant_defaults=True)
        data = await load_json(request, body_schema(request, schema))
        await check_body(request, task_name, data)
        if query["stream"]:
            return await submit_and_stream(request, task_name, data, message)
        return await submit(request, task_name, data, message, query["wait"])

    handler.__name__ = f"submit_{task_name}"
    return handler


def body_schema(request: web.Request, schema: type[Schema]) -> Schema:
    """The schema instance that validates a submission's body."""
    if schema is SendNotificationRequest:
        return schema(settings=request.app[settings_key])
    return shared(schema)


async def check_body(
    request: web.Request, task_name: str, data: dict[str, Any], *, budget: bool = True
) -> None:
    """What a valid body must also pass before it is submitted (also each item of a
    batch, and a schedule's arguments, without `budget`): the recipient, the model and the
    owner's budget, whose resources it acts on, its webhook."""
    principal = principal_of(request)
    if task_name == queues.SEND_NOTIFICATION:
        check_notification_recipient(principal, data)
    elif task_name == queues.GENERATE_AI_RESPONSE:
        check_model_request(principal, request.app[settings_key], data)
        if budget:
            await check_budget(
                request.app[redis_key], request.app[settings_key], principal.owner,
                request.app.get(redis_pipe_key),
            )  # fmt: skip
    await check_submission(request, task_name, data)
    if data.get("webhook") is not None:
        check_webhook(request.app[settings_key], data["webhook"])


async def submit_and_stream(
    request: web.Request, task_name: str, data: dict[str, Any], message: str
) -> web.StreamResponse:
    """Submit, then answer the new task's event stream (`?stream=true`): one request for
    a chat backend. An `Idempotency-Key` seen before streams the first task."""
    response = await submit(request, task_name, data, message, None)
    body = json.loads(cast(bytes, response.body))
    return await stream_task(request, body["task_id"], 0, first=body)


async def submit(
    request: web.Request, task_name: str, data: dict[str, Any], message: str, wait: float | None,
    task_id: str | None = None, fingerprint: str | None = None,
) -> web.Response:  # fmt: skip
    """Publish the task (under `task_id`, else a new id) and answer 202 with its id, or its
    status once finished within `wait` seconds. An `Idempotency-Key` is bound to the
    request's `fingerprint` (default: the endpoint and `data`)."""
    principal = principal_of(request)
    existing = None
    task_id = task_id or str(uuid4())
    if IDEMPOTENCY_HEADER in request.headers:  # the body's digest only when a key needs it
        fingerprint = fingerprint or request_fingerprint(task_name, data)
        existing = await claim_idempotency(request, principal.owner, task_id, fingerprint)
    options, webhook, tags, metadata = split_options(task_name, data)
    if existing is not None:
        body = {"task_id": existing, "status": "PENDING", "message": "already submitted"}
        return web.json_response(
            shared(SubmitResponse).dump(body),
            status=202,
            headers={"Idempotent-Replayed": "true", "Location": status_url(existing)},
        )
    idem_key = _idempotency_key(request, principal.owner)
    publisher = request.app[publisher_key]

    async def publish() -> None:
        # The record and the message go together: when Redis cannot take them (down, out
        # of memory) the task is refused, and no accepted task lacks a record.
        record = submission_fields(
            task_name, [], data, queue=TASK_QUEUES.get(task_name),
            priority=DEFAULT_PRIORITY if options["priority"] is None else options["priority"],
            owner=principal.owner, eta=_eta_text(options), webhook=webhook, tags=tags,
            metadata=metadata,
        )  # fmt: skip
        event = {"priority": record["priority"], "tags": tags, "metadata": metadata}
        try:
            await publisher.publish(
                task_name, data, task_id=task_id, headers={OWNER_HEADER: principal.owner},
                record=record, event={k: v for k, v in event.items() if v is not None},
                **options,
            )  # fmt: skip
        except Exception:
            await _undo(request, task_id, idem_key)
            raise

    location = {"Location": status_url(task_id)}
    if not wait:
        await publish()
        body = {"task_id": task_id, "status": "PENDING", "message": message}
        return web.json_response(shared(SubmitResponse).dump(body), status=202, headers=location)

    # Subscribe before publishing so a fast task cannot finish unseen.
    async with request.app[waiter_key].watch(task_id) as finished:
        await publish()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(finished, wait)
    record, meta = await request.app[task_store_key].get_with_result(task_id)
    if record is not None:
        body = status_body(record, meta, principal)
        if body["status"] in TERMINAL_STATES:
            return web.json_response(body, status=200)
    body = {"task_id": task_id, "status": "PENDING", "message": message}
    return web.json_response(shared(SubmitResponse).dump(body), status=202, headers=location)


def split_options(
    task_name: str, data: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any] | None, list[str] | None, dict[str, Any] | None]:
    """Take the submission's own options out of a validated body, leaving the task's
    arguments: the scheduling options, its webhook, tags and metadata. A document's
    `metadata` (knowledge/vectorize) is the document's: it stays an argument."""
    options = {k: data.pop(k, None) for k in OPTIONS}
    webhook = data.pop("webhook", None)
    tags = data.pop("tags", None)
    metadata = None if task_name == queues.VECTORIZE_DOCUMENT else data.pop("metadata", None)
    return options, webhook, tags, metadata


def status_url(task_id: str) -> str:
    return f"/api/v1/tasks/status/{task_id}"


async def claim_idempotency(
    request: web.Request, owner: str, new_id: str, fingerprint: str
) -> str | None:
    """With an `Idempotency-Key` header: bind the key to `new_id` and `fingerprint`, or
    answer the id it is bound to already (422 when that was another request). None when
    the request is new (or carries no key)."""
    idem_key = _idempotency_key(request, owner)
    if idem_key is None:
        return None
    client = request.app[redis_key]
    first = await client.set(idem_key, f"{new_id} {fingerprint}", nx=True, ex=IDEMPOTENCY_TTL)
    if first:
        return None
    stored = cast(str, await client.get(idem_key) or "")  # decoded (decode_responses)
    existing, _, seen = stored.partition(" ")
    if seen and seen != fingerprint:
        # The IETF Idempotency-Key draft (and Stripe): a key names one request.
        raise Unprocessable(
            "Idempotency-Key was already used with a different request",
            details={IDEMPOTENCY_HEADER: ["reused with another body or endpoint"]},
        )
    return existing


def request_fingerprint(task_name: str, data: Any) -> str:
    """What an Idempotency-Key is bound to: the endpoint and the validated body."""
    text = json.dumps([task_name, data], sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


async def _undo(request: web.Request, task_id: str, idem_key: str | None) -> None:
    """A publish that failed: the client is told so. Should the message have reached
    Redis anyway, the cancel keeps it from running (written later if Redis is down), and
    the Idempotency-Key is released for the client's retry. The publish error is the one
    the client hears about; these are logged."""
    try:
        await request.app[task_store_key].refuse(task_id)
    except Exception as exc:
        logger.warning("could not record the refusal of %s: %r", task_id, exc)
    if idem_key is not None:
        try:
            await request.app[redis_key].delete(idem_key)
        except redis.exceptions.RedisError as exc:
            logger.warning("could not release the Idempotency-Key of %s: %r", task_id, exc)


def _eta_text(options: dict[str, Any]) -> str | None:
    if options.get("eta") is not None:
        return options["eta"].isoformat()
    if options.get("countdown"):
        return (datetime.now(UTC) + timedelta(seconds=options["countdown"])).isoformat()
    return None


def check_webhook(settings: Settings, webhook: dict[str, Any]) -> None:
    """A task webhook's address is checked as a notification webhook's: a forbidden
    literal address is refused here (a name is resolved and checked at each delivery)."""
    webhook["events"] = [e for e in WEBHOOK_EVENTS if e in webhook["events"]]
    try:
        check_literal(webhook["url"], webhook_policy(settings))
    except TargetRefused as exc:
        raise BadRequest("invalid request", details={"webhook": {"url": [str(exc)]}}) from None


def check_notification_recipient(principal: Principal, data: dict[str, Any]) -> None:
    """A user key may put in-app notifications only in its own inbox."""
    if data["channel"] == "in_app" and not principal.is_admin:
        if data["recipient"] != principal.owner:
            raise Forbidden("user keys may only notify their own in-app inbox")


def check_model_request(principal: Principal, settings: Settings, data: dict[str, Any]) -> None:
    """Only allowed models, and no more output than the key's role may ask for."""
    errors = {}
    if data.get("model") is not None and data["model"] not in settings.allowed_models:
        errors["model"] = [f"not allowed; one of {', '.join(sorted(settings.allowed_models))}"]
    cap = settings.max_tokens_for(principal.role)
    if data.get("max_tokens") is not None and data["max_tokens"] > cap:
        errors["max_tokens"] = [f"at most {cap} for a {principal.role} key"]
    if errors:
        raise BadRequest("invalid request", details=errors)


def _idempotency_key(request: web.Request, owner: str) -> str | None:
    value = request.headers.get(IDEMPOTENCY_HEADER)
    if value is None:
        return None
    if not 1 <= len(value) <= 255:
        raise BadRequest(
            "invalid Idempotency-Key", details={IDEMPOTENCY_HEADER: ["1 to 255 characters"]}
        )
    digest = hashlib.sha256(f"{owner}\0{value}".encode()).hexdigest()
    return idempotency_key(digest)


# The submission endpoints by their path under /api/v1/tasks (the items of a batch name
# them): the task each submits and the schema of its body.
SUBMISSIONS: dict[str, tuple[str, type[Schema]]] = {
    "ai/generate": (queues.GENERATE_AI_RESPONSE, AiGenerateRequest),
    "knowledge/vectorize": (queues.VECTORIZE_DOCUMENT, VectorizeRequest),
    "knowledge/update": (queues.UPDATE_KNOWLEDGE_BASE, UpdateKnowledgeBaseRequest),
    "knowledge/delete": (queues.DELETE_KNOWLEDGE_VECTORS, DeleteVectorsRequest),
    "notifications/send": (queues.SEND_NOTIFICATION, SendNotificationRequest),
}

submit_ai_generate = submission(
    queues.GENERATE_AI_RESPONSE, AiGenerateRequest, "AI reply task submitted"
)
submit_vectorize = submission(
    queues.VECTORIZE_DOCUMENT, VectorizeRequest, "document vectorization submitted"
)
submit_update_kb = submission(
    queues.UPDATE_KNOWLEDGE_BASE, UpdateKnowledgeBaseRequest, "knowledge base re-index submitted"
)
submit_delete_vectors = submission(
    queues.DELETE_KNOWLEDGE_VECTORS, DeleteVectorsRequest, "vector deletion submitted"
)
submit_notification = submission(
    queues.SEND_NOTIFICATION, SendNotificationRequest, "notification submitted"
)
