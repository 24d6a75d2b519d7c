"""AI usage over time (`GET /api/v1/usage`): a user key reads its owner's, an admin key
everyone's or one owner's (`owner`)."""

from __future__ import annotations

from aiohttp import web

from service.keys import redis_key
from service.middlewares import principal_of
from service.ownership import acting_owner
from service.requests import load_query
from service.schemas import shared
from service.schemas_usage import UsageQuery, UsageResponse
from service.usage import usage_report


async def usage(request: web.Request) -> web.Response:
    principal = principal_of(request)
    query = load_query(request, shared(UsageQuery))
    owner = query["owner"] if principal.is_admin else acting_owner(principal, query["owner"])
    report = await usage_report(
        request.app[redis_key], query["granularity"], query["start"], query["end"], owner,
        query["group_by"],
    )  # fmt: skip
    return web.json_response(shared(UsageResponse).dump(report))
