"""A local webhook receiver that verifies the HMAC signature of every delivery.

Paths: `/hook/<name>` accepts; `/flaky/<name>` answers 503 first, then accepts;
`/slow/<name>` stalls past the worker's timeout once, then accepts;
`/redirect?to=<url>` answers 307 to `to`. Deliveries are kept per name.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections import defaultdict
from typing import Any

from aiohttp import web

from tests.support.background_server import BackgroundServer
from workers.notify.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature

SECRET = "webhook-test-secret"


class WebhookServer(BackgroundServer):
    def __init__(self) -> None:
        app = web.Application()
        app.router.add_post("/hook/{name}", self.hook)
        app.router.add_post("/flaky/{name}", self.flaky)
        app.router.add_post("/slow/{name}", self.slow)
        app.router.add_post("/redirect", self.redirect)
        super().__init__(app)
        self.deliveries: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.attempts: dict[str, int] = defaultdict(int)

    async def _record(self, request: web.Request) -> dict[str, Any]:
        body = await request.read()
        expected = signature(SECRET, request.headers.get(TIMESTAMP_HEADER, ""), body)
        valid = hmac.compare_digest(expected, request.headers.get(SIGNATURE_HEADER, ""))
        delivery = {"valid": valid, "headers": dict(request.headers), "json": json.loads(body)}
        self.attempts[request.match_info["name"]] += 1
        return delivery

    async def hook(self, request: web.Request) -> web.Response:
        delivery = await self._record(request)
        self.deliveries[request.match_info["name"]].append(delivery)
        return web.json_response({"ok": True}, status=200 if delivery["valid"] else 401)

    async def flaky(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        await self._record(request)
        if self.attempts[name] == 1:
            return web.Response(status=503, headers={"Retry-After": "0.2"})
        return await self.hook(request)

    async def slow(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        await self._record(request)
        if self.attempts[name] == 1:
            await asyncio.sleep(3)
        return await self.hook(request)

    async def redirect(self, request: web.Request) -> web.Response:
        return web.Response(status=307, headers={"Location": request.query["to"]})


class TaskWebhookReceiver(BackgroundServer):
    """A receiver of task webhooks: keeps each request's headers and raw body per name.

    `/ok/<name>` answers 200; `/fail/<name>?times=N` answers 500 to the first N requests,
    then 200; `/redirect?to=<url>` answers 307 to `to`.
    """

    def __init__(self) -> None:
        app = web.Application()
        app.router.add_post("/ok/{name}", self.ok)
        app.router.add_post("/fail/{name}", self.fail)
        app.router.add_post("/redirect", self.redirect)
        super().__init__(app)
        self.received: dict[str, list[dict[str, Any]]] = defaultdict(list)

    async def _keep(self, request: web.Request) -> int:
        name = request.match_info["name"]
        self.received[name].append({"headers": dict(request.headers), "body": await request.read()})
        return len(self.received[name])

    async def ok(self, request: web.Request) -> web.Response:
        await self._keep(request)
        return web.json_response({"ok": True})

    async def fail(self, request: web.Request) -> web.Response:
        count = await self._keep(request)
        if count <= int(request.query.get("times", "1")):
            return web.Response(status=500, text="receiver down")
        return web.json_response({"ok": True})

    async def redirect(self, request: web.Request) -> web.Response:
        return web.Response(status=307, headers={"Location": request.query["to"]})
