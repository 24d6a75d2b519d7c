"""The OpenAPI 3 document, generated from the route table and its marshmallow schemas."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from service.routes import ROUTES, Route
from service.schemas import (
    ErrorResponse,
    TaskStreamEvent,
    TaskStreamResume,
    TaskWebhookPayload,
)

ERRORS = {
    "400": "invalid input; `details` names each bad field",
    "401": "missing or invalid API key",
    "403": "not allowed for this key",
    "404": "not found (or not yours)",
    "409": "not possible in the task's current state",
    "413": "the body is larger than the gateway accepts (1 MiB)",
    "415": "the body must be application/json",
    "503": "Redis or the broker is unavailable; retry after `Retry-After` seconds",
}


# A task's event stream (service/views/stream.py; docs/sse.md): SSE frames whose `data` is
# one JSON event.
STREAM_DESCRIPTION = (
    "Server-Sent Events. Each event: `id` (its number in the task's event log), `event` "
    "(`state`, `progress`, `chunk`, `chunks_reset`, `waiting`; `resume` and `submitted` "
    "without an id) and `data`, JSON: a `TaskStreamEvent` for the numbered events, a "
    "`TaskStreamResume` for `resume` (the gateway ended the stream: reconnect with "
    "`Last-Event-ID`), a `SubmitResponse` for `submitted`. Ends after the final `state`, "
    "whose `task` is the status body."
)
# Where a reader of a task's stream resumes (service/views/stream.py), as an EventSource
# sends it on a reconnect.
LAST_EVENT_ID: dict[str, Any] = {
    "in": "header",
    "name": "Last-Event-ID",
    "required": False,
    "schema": {"type": "string", "pattern": "^[0-9]{1,15}$"},
    "description": "replay the events numbered after this one (as `starting_after`, "
    "which wins when both are given); a browser's EventSource sends it on a reconnect",
}
EVENT_STREAM: dict[str, Any] = {
    # One event of the stream, as an SSE parser yields it.
    "schema": {
        "type": "object",
        "properties": {
            "id": {"type": "string", "description": "the event's number (absent: unnumbered)"},
            "event": {"type": "string"},
            "data": {"type": "string", "description": "a JSON TaskStreamEvent"},
            "retry": {"type": "integer"},
        },
        "required": ["event", "data"],
    },
    "example": (
        'id: 1\nevent: state\ndata: {"type": "task", "seq": 1, "state": "PENDING", ...}\n\n'
        'id: 3\nevent: chunk\ndata: {"type": "chunk", "seq": 3, "index": 0, "text": "Hel", '
        "...}\n\n"
    ),
}


# A task webhook's delivery (docs/webhooks.md), as an OpenAPI callback of the submissions.
WEBHOOK_CALLBACK: dict[str, Any] = {
    "post": {
        "summary": "A task event, signed per Standard Webhooks",
        "parameters": [
            {
                "in": "header",
                "name": name,
                "required": True,
                "schema": {"type": "string"},
                "description": text,
            }
            for name, text in (
                ("webhook-id", "the event's id: the same on retries and redeliveries"),
                ("webhook-timestamp", "epoch seconds of this attempt"),
                (
                    "webhook-signature",
                    "space-separated `v1,<base64 HMAC-SHA256>` of "
                    "`<webhook-id>.<webhook-timestamp>.<body>`, keyed with the owner's secret",
                ),
            )
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": "TaskWebhookPayload"}},
        },
        "responses": {"2XX": {"description": "received; anything else is retried"}},
    }
}


def _operation(route: Route) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": route.summary,
        "tags": list(route.tags),
        "operationId": route.handler.__name__,  # type: ignore[attr-defined]
        "responses": {},
    }
    parameters = _parameters(route)
    if parameters:
        op["parameters"] = parameters
    body = _request_body(route)
    if body is not None:
        op["requestBody"] = body
    ok: dict[str, Any] = {"description": "success"}
    if route.response is not None:
        ok["content"] = {"application/json": {"schema": route.response}}
    if route.events:
        ok["content"] = {"text/event-stream": EVENT_STREAM}
        ok["description"] = STREAM_DESCRIPTION
    op["responses"][str(route.status)] = ok
    op["responses"].update(_other_successes(route))
    if route.events and route.method == "GET":
        op["responses"]["204"] = {"description": "the reader has the final event already"}
    if route.status == 202 and route.query is not None and "wait" in route.query().fields:
        op["responses"]["200"] = {
            "description": "finished within `wait` seconds (the status body); with "
            "`stream=true`, the task's event stream: " + STREAM_DESCRIPTION,
            "content": {
                "application/json": {"schema": "TaskStatusResponse"},
                "text/event-stream": EVENT_STREAM,
            },
        }
    op["responses"].update(_error_responses(route))
    if route.body is not None and "webhook" in route.body().fields:
        op["callbacks"] = {"taskWebhook": {"{$request.body#/webhook/url}": WEBHOOK_CALLBACK}}
    if not route.public:
        op["security"] = [{"bearer": []}]
    return op


def _parameters(route: Route) -> list[dict[str, Any]]:
    """The path's parameters, the query schema's, and a stream's `Last-Event-ID`."""
    parameters: list[dict[str, Any]] = [
        {"in": "path", "name": name, "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", route.path)
    ]
    if route.query is not None:
        parameters.append({"in": "query", "schema": route.query})
    if route.events and route.method == "GET":
        parameters.append(LAST_EVENT_ID)
    return parameters


# An example body of each error (the `error` text varies with the case).
EXAMPLES: dict[str, dict[str, Any]] = {
    "400": {"error": "invalid request", "details": {"priority": ["Must be between 0 and 9."]}},
    "401": {"error": "missing or invalid API key"},
    "403": {"error": "admin key required"},
    "404": {"error": "no such task"},
    "409": {"error": "task is already running; an admin may pass terminate=true"},
    "413": {"error": "request body too large"},
    "415": {"error": "the body must be application/json"},
    "422": {"error": "Idempotency-Key was already used with a different request",
            "details": {"Idempotency-Key": ["reused with another body or endpoint"]}},
    "429": {"error": "over its budget", "details": {"budget": {"limit": 100000}}},
    "502": {"error": "the embedding provider refused the query"},
    "503": {"error": "redis unavailable"},
    "504": {"error": "no worker replied in time"},
}  # fmt: skip


def _request_body(route: Route) -> dict[str, Any] | None:
    """A JSON body from its schema, or another kind the route names (a batch's JSON Lines)."""
    if route.body is not None:
        return {
            "required": route.method == "POST" and route.query is not route.body,
            "content": {"application/json": {"schema": route.body}},
        }
    if "media" in route.extra:
        media, text = route.extra["media"]
        schema = {"type": "string", "description": text}
        return {"required": True, "content": {media: {"schema": schema}}}
    return None


def _other_successes(route: Route) -> dict[str, Any]:
    """Successful answers besides the route's own (a bulk action's dry run: 200, a count)."""
    return {
        code: {"description": text, "content": {"application/json": {"schema": schema}}}
        for code, (text, schema) in route.extra.get("also", {}).items()
    }


def _error_codes(route: Route) -> list[str]:
    """The errors this operation can answer: from what it takes (a body, parameters, a
    path naming something) and who may call it, plus those its route names."""
    has_body = route.body is not None and route.method != "GET"
    codes = {"400", "503"}  # 400: its input, or a request line the HTTP parser refuses
    if not route.public:
        codes |= {"401", "403"}  # 403: an admin route, another owner, a foreign origin
    if "{" in route.path:
        codes.add("404")
    if has_body:
        codes |= {"413", "415"}
    codes |= set(route.extra.get("responses", {}))
    return sorted(codes)


def _error_responses(route: Route) -> dict[str, Any]:
    """The errors a route can answer, each with the JSON error body and an example."""
    named = route.extra.get("responses", {})
    responses = {code: _error_response(named.get(code) or ERRORS[code], code)
                 for code in _error_codes(route)}  # fmt: skip
    # The HTTP parser refuses a request line or header over 8 KiB before any handler runs,
    # in plain text.
    responses["400"]["description"] += (
        "; a request line or header longer than 8 KiB is refused in plain text"
    )
    responses["400"]["content"]["text/plain"] = {"schema": {"type": "string"}}
    return responses


def _error_response(text: str, code: str) -> dict[str, Any]:
    return {
        "description": text,
        "content": {"application/json": {"schema": ErrorResponse, "example": EXAMPLES.get(code)}},
    }


def build_spec() -> dict[str, Any]:
    spec = APISpec(
        title="CLAW.AI task platform",
        version="1.0.0",
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
    )
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    spec.components.schema("TaskStreamEvent", schema=TaskStreamEvent)
    spec.components.schema("TaskStreamResume", schema=TaskStreamResume)
    spec.components.schema("TaskWebhookPayload", schema=TaskWebhookPayload)
    for route in ROUTES:
        spec.path(path=route.path, operations={route.method.lower(): _operation(route)})
    return spec.to_dict()


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(request.app[_spec_key])


_spec_key = web.AppKey("openapi", dict)


def setup_openapi(app: web.Application) -> None:
    app[_spec_key] = build_spec()
    app.router.add_get("/api/v1/openapi.json", openapi_json)
