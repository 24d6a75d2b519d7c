"""Task submission endpoints."""

from __future__ import annotations

from aiohttp import web

from service.keys import publisher_key
from service.middlewares import principal_of
from service.requests import load_json
from service.schemas import AiGenerateRequest, SubmitResponse
from workers import queues

_OPTIONS = ("priority", "countdown", "eta")


async def submit_ai_generate(request: web.Request) -> web.Response:
    data = await load_json(request, AiGenerateRequest())
    principal = principal_of(request)
    options = {k: data.pop(k) for k in _OPTIONS}
    task_id = await request.app[publisher_key].publish(
        queues.GENERATE_AI_RESPONSE,
        data,
        headers={"claw_owner": principal.owner},
        **options,
    )
    body = SubmitResponse().dump(
        {"task_id": task_id, "status": "PENDING", "message": "AI reply task submitted"}
    )
    return web.json_response(body, status=202)
