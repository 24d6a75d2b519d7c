"""Run an aiohttp application on its own event loop in a thread, for the tests' fakes.

Workers are separate processes: the fakes must listen on a real port while the test (and
its blocking waits) runs in the main thread.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from aiohttp import web

from workers.dev.embedded_redis import free_port


class BackgroundServer:
    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._runner: Any = None

    def start(self) -> BackgroundServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app, shutdown_timeout=1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
