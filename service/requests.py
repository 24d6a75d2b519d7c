"""The one entry point that turns a request into validated data."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from marshmallow import Schema, ValidationError

from service.errors import ApiError, BadRequest


class UnsupportedMediaType(ApiError):
    status = 415
    message = "request body must be application/json"


async def load_json(request: web.Request, schema: Schema) -> dict[str, Any]:
    """Validate a JSON body against `schema`; an empty body counts as `{}`."""
    raw = await request.read()
    if not raw.strip():
        data: Any = {}
    else:
        if request.content_type != "application/json":
            raise UnsupportedMediaType()
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadRequest(f"malformed JSON: {exc}") from None
    return validate(schema, data)


def load_query(request: web.Request, schema: Schema) -> dict[str, Any]:
    return validate(schema, dict(request.query))


def validate(schema: Schema, data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    try:
        return schema.load(data)
    except ValidationError as exc:
        messages = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
        raise BadRequest("invalid request", details=messages) from None
