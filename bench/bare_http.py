"""Bare aiohttp handlers: the baseline of the `status` endpoint's requests per second, and
the HTTP ceiling of submissions (a POST that reads the JSON body and answers 202).

It runs on uvloop, like the gateway, so the comparison is of the work per request and
not of the event loop.

python -m bench.bare_http PORT
"""

from __future__ import annotations

import sys
import uuid

import uvloop
from aiohttp import web

BODY = {
    "task_id": "00000000-0000-0000-0000-000000000000",
    "status": "SUCCESS",
    "result": {"ok": True},
    "error": None,
    "date_done": "2025-01-01T00:00:00+00:00",
    "runtime": 0.001,
}


async def status(request: web.Request) -> web.Response:
    return web.json_response({**BODY, "task_id": request.match_info["task_id"]})


async def submit(request: web.Request) -> web.Response:
    await request.json()
    return web.json_response(
        {"task_id": str(uuid.uuid4()), "status": "PENDING", "message": "accepted"}, status=202
    )


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def main() -> None:
    app = web.Application()
    app.router.add_get("/api/v1/tasks/status/{task_id}", status)
    app.router.add_post("/api/v1/tasks/ai/generate", submit)
    app.router.add_get("/healthz", healthz)
    web.run_app(
        app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None,
        loop=uvloop.new_event_loop(),
    )  # fmt: skip


if __name__ == "__main__":
    main()
