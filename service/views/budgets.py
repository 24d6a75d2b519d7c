"""Budgets per owner (admin keys): read, set and remove an owner's own limits; without
them the settings' defaults apply (service/budgets.py)."""

from __future__ import annotations

from aiohttp import web

from service import budgets
from service.errors import BadRequest
from service.keys import redis_key, settings_key
from service.requests import load_json
from service.schemas import shared
from service.schemas_usage import BudgetRequest, BudgetResponse

MAX_OWNER = 200


def owner_of(request: web.Request) -> str:
    owner = request.match_info["owner"]
    if not 1 <= len(owner) <= MAX_OWNER:
        raise BadRequest("invalid owner", details={"owner": [f"1 to {MAX_OWNER} characters"]})
    return owner


async def _answer(request: web.Request, owner: str) -> web.Response:
    state = await budgets.budget_state(request.app[redis_key], request.app[settings_key], owner)
    return web.json_response(shared(BudgetResponse).dump(state))


async def get_budget(request: web.Request) -> web.Response:
    return await _answer(request, owner_of(request))


async def put_budget(request: web.Request) -> web.Response:
    owner = owner_of(request)
    data = await load_json(request, shared(BudgetRequest))
    await budgets.set_budget(request.app[redis_key], owner, data)
    return await _answer(request, owner)


async def delete_budget(request: web.Request) -> web.Response:
    owner = owner_of(request)
    await budgets.delete_budget(request.app[redis_key], owner)
    return await _answer(request, owner)
