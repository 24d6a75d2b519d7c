"""`GET /api/v1/catalog`: the queues, built-in task names and task states, as the platform
defines them, so clients (the dashboard among them) keep no copies of their own."""

from __future__ import annotations

from aiohttp import web

from service.schemas import CatalogResponse, shared
from workers.core.queues import QUEUES, SYSTEM_TASKS, TASK_QUEUES
from workers.taskindex.index import STATES, TERMINAL_STATES


async def catalog(request: web.Request) -> web.Response:
    body = {
        "queues": list(QUEUES),
        "tasks": [{"name": name, "queue": queue} for name, queue in TASK_QUEUES.items()],
        "states": list(STATES),
        "terminal_states": [state for state in STATES if state in TERMINAL_STATES],
        "system_tasks": sorted(SYSTEM_TASKS),
    }
    return web.json_response(shared(CatalogResponse).dump(body))
