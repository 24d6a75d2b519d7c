"""The one entry point that turns a request into validated data."""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web
from marshmallow import Schema, ValidationError

from service.errors import ApiError, BadRequest

# A JSON body nests at most this deep: every schema is a flat object with small values.
MAX_JSON_DEPTH = 32


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
        except RecursionError:  # nested past the parser's own limit
            raise _too_deep() from None
        if nesting_depth(data) > MAX_JSON_DEPTH:
            raise _too_deep()
        if SURROGATE_ESCAPE.search(raw) and not _encodable(data):
            raise BadRequest(
                "malformed JSON: an unpaired surrogate escape",
                details={"body": ["a \\uD800-\\uDFFF escape that is not half of a pair"]},
            )
    return validate(schema, data)


# JSON may escape a UTF-16 surrogate (`\ud83d\ude00` is one emoji); alone, one decodes to
# a string no UTF-8 encoder (Redis, the worker, the logs) can take.
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _encodable(data: Any) -> bool:
    try:
        json.dumps(data, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


def _too_deep() -> BadRequest:
    return BadRequest(
        "request body nested too deeply",
        details={"body": [f"JSON nested deeper than {MAX_JSON_DEPTH} levels"]},
    )


def nesting_depth(data: Any) -> int:
    """How deep objects and arrays nest in `data` (a scalar is 0), without recursion.

    No schema needs more than a few levels; deeper values would only reach code that
    recurses over them (JSON encoders, validators) and fail there with a RecursionError.
    """
    deepest = 0
    stack: list[tuple[Any, int]] = [(data, 1)] if isinstance(data, (dict, list)) else []
    while stack:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            break
        children = value.values() if isinstance(value, dict) else value
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return deepest


# Schemas' answers to an empty query (their defaults), for those loaded with
# `constant_defaults`: most submissions have no query, and loading {} cost ~5% of one.
_EMPTY_QUERY: dict[Schema, dict[str, Any]] = {}


def load_query(
    request: web.Request, schema: Schema, *, constant_defaults: bool = False
) -> dict[str, Any]:
    """The query validated by `schema`; a parameter given twice is refused (which one was
    meant?) rather than one of them silently used. `constant_defaults`: the schema's
    defaults are the same every time and immutable (no time, no hook), so an empty query's
    answer is loaded once."""
    if constant_defaults and not request.query_string:
        if schema not in _EMPTY_QUERY:
            _EMPTY_QUERY[schema] = validate(schema, {})
        return dict(_EMPTY_QUERY[schema])
    repeated = sorted({k for k in request.query if len(request.query.getall(k)) > 1})
    if repeated:
        raise BadRequest("invalid query", details={k: ["given more than once"] for k in repeated})
    return validate(schema, dict(request.query))


def validate(schema: Schema, data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    try:
        return schema.load(data)
    except ValidationError as exc:
        messages = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
        raise BadRequest("invalid request", details=messages) from None
