"""`GET /api/v1/tasks/ws`: the live feed over a websocket (protocol: docs/websocket.md)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import WSMsgType, web
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from service.feed import Client, FeedHub, SubscriptionLimitExceeded, message
from service.keys import feed_key, redis_key, sessions_key, settings_key, task_store_key
from service.metrics import metrics_key
from service.middlewares import principal_of
from service.sessions import TICKET_TTL
from service.views.tasks import status_body
from workers.core.keys import chunks_key

# A bigger frame closes the socket with 1009 (message too big) before it is parsed.
MAX_FRAME_BYTES = 64 * 1024
MAX_VALUE_LENGTH = 255


def _values() -> fields.List:
    return fields.List(
        fields.String(validate=validate.Length(1, MAX_VALUE_LENGTH)),
        load_default=list,
        allow_none=True,
    )


class SubscriptionMessage(Schema):
    """The subscription part of a `subscribe` or `unsubscribe` message, or of the upgrade
    URL's query; how many values a connection may hold is the hub's limit."""

    class Meta:
        unknown = EXCLUDE

    task_ids = _values()
    queues = _values()
    names = _values()
    all = fields.Boolean()


SUBSCRIPTION_MESSAGE = SubscriptionMessage()


async def ticket(request: web.Request) -> web.Response:
    token = await request.app[sessions_key].issue_ticket(principal_of(request))
    return web.json_response({"ticket": token, "expires_in": TICKET_TTL})


def _split(value: str | None) -> list[str]:
    return [v for v in (value or "").split(",") if v]


async def websocket(request: web.Request) -> web.WebSocketResponse:
    # The Origin was checked with the credentials (service/middlewares.py).
    principal = principal_of(request)
    settings = request.app[settings_key]
    hub: FeedHub = request.app[feed_key]
    ws = web.WebSocketResponse(heartbeat=settings.ws_heartbeat, max_msg_size=MAX_FRAME_BYTES)
    await ws.prepare(request)
    client = Client(ws, principal, settings.ws_buffer, request.transport, hub.limits)
    client.writer = asyncio.get_running_loop().create_task(client.run_writer())
    hub.add(client)
    request.app[metrics_key].websocket_clients.inc()
    try:
        client.enqueue(
            json.dumps(
                message(
                    "hello", id=hub.last_id or "0-0", heartbeat=settings.ws_heartbeat,
                    principal={"owner": principal.owner, "role": principal.role},
                )
            )
        )  # fmt: skip
        query = request.query
        initial = {
            "task_ids": _split(query.get("task_ids")),
            "queues": _split(query.get("queues")),
            "names": _split(query.get("names")),
            "all": query.get("all", "").lower() in ("1", "true", "yes"),
        }
        await subscribe(request, client, initial)
        if query.get("last_event_id"):
            await resume(request, client, query["last_event_id"])
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await handle(request, client, msg.data)
            elif msg.type == WSMsgType.ERROR:
                break
    finally:
        hub.remove(client)
        request.app[metrics_key].websocket_clients.dec()
        if client.closer is not None:
            with contextlib.suppress(Exception):
                await client.closer
        if client.writer is not None:
            client.writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await client.writer
        transport = client.transport
        if transport is not None and transport.get_write_buffer_size():  # type: ignore[attr-defined]
            # Closed for not answering pings with unsent data left: it will never drain.
            client.abort()
    return ws


async def handle(request: web.Request, client: Client, text: str) -> None:
    try:
        data = json.loads(text)
        action = data.get("action") if isinstance(data, dict) else None
    except (ValueError, RecursionError):
        data, action = {}, None
    if action == "subscribe":
        await subscribe(request, client, data)
    elif action == "unsubscribe":
        wanted = _load_subscription(client, data)
        if wanted is not None:
            client.subscription.update(wanted, add=False)
    elif action == "resume" and isinstance(data.get("last_event_id"), str):
        await resume(request, client, data["last_event_id"])
    elif action == "ping":
        client.enqueue(json.dumps(message("pong")))
    else:
        client.enqueue(json.dumps(message("error", error="unknown or malformed action")))


def _load_subscription(client: Client, data: dict[str, Any]) -> dict[str, Any] | None:
    """The validated subscription fields, or None after telling the client what is wrong."""
    try:
        wanted = SUBSCRIPTION_MESSAGE.load(data)
    except ValidationError as exc:
        error = message("error", error="invalid subscription", details=exc.messages)
        client.enqueue(json.dumps(error))
        return None
    return {k: (v if v is not None else []) for k, v in wanted.items()}


async def subscribe(request: web.Request, client: Client, data: dict[str, Any]) -> None:
    """Add to the subscription and send a snapshot of each newly named task. Past a cap
    (WS_MAX_TASK_IDS, WS_MAX_NAMES) nothing is added: an `error` names the cap."""
    wanted = _load_subscription(client, data)
    if wanted is None:
        return
    known = client.subscription.task_ids
    new_ids = [t for t in dict.fromkeys(wanted["task_ids"]) if t not in known]
    try:
        client.subscription.update(wanted, add=True)
    except SubscriptionLimitExceeded as exc:
        error = message(
            "error", error=f"subscription refused: {exc}", details={exc.kind: [str(exc)]},
            limit={exc.kind: exc.limit},
        )  # fmt: skip
        client.enqueue(json.dumps(error))
        return
    for task_id in new_ids:
        await send_snapshot(request, client, task_id)


async def send_snapshot(request: web.Request, client: Client, task_id: str) -> None:
    record, meta = await request.app[task_store_key].get_with_result(task_id)
    principal = client.principal
    if record is None or not (principal.is_admin or record.get("owner") == principal.owner):
        # Unknown and foreign ids look alike; the subscription stays for a task to come.
        client.enqueue(json.dumps(message("snapshot", task_id=task_id, state=None, task=None)))
        return
    body = status_body(record, meta, principal)
    chunks = await request.app[redis_key].lrange(chunks_key(task_id), 0, -1)
    snapshot = message("snapshot", task_id=task_id, state=body["status"], task=body, chunks=chunks)
    client.enqueue(json.dumps(snapshot))


async def resume(request: web.Request, client: Client, last_event_id: str) -> None:
    try:
        in_window = await request.app[feed_key].replay(client, last_event_id)
    except (ValueError, TypeError):
        client.enqueue(json.dumps(message("error", error="bad last_event_id")))
        return
    if not in_window:
        client.enqueue(json.dumps(message("resync", reason="last_event_id out of window")))
        for task_id in list(client.subscription.task_ids):
            await send_snapshot(request, client, task_id)
