"""The live feed when Redis's stream goes back in time, as after a Sentinel failover to a
replica that had not received the newest entries: never silence, always `resync`.

Simulated on a private Redis: the stream is replaced by an older history and every
connection is killed (the gateway reconnects, as to a promoted replica).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
import redis

from tests.deploy.conftest import Processes
from tests.support.processes import start_gateway
from tests.support.waiting import async_wait_until
from workers.core.keys import FEED_STREAM
from workers.dev.embedded_redis import EmbeddedRedis
from workers.taskindex.index import TaskIndex

pytestmark = pytest.mark.slow


async def received(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict:
    async def next_of_kind() -> dict | None:
        msg = await ws.receive(timeout=15)
        event = json.loads(msg.data)
        return event if event["type"] == kind else None

    return await async_wait_until(next_of_kind, 20, 0, f"a {kind} message")


async def test_a_feed_that_went_back_sends_resync_to_live_and_resuming_clients(
    private_redis: Callable[..., EmbeddedRedis], processes: Processes, log_dir: Path
) -> None:
    server = private_redis(name="feed")
    gateway = processes.register(start_gateway(server.url, log_dir))
    client = redis.Redis(port=server.port, decode_responses=True)
    ws_url = gateway.base_url.replace("http", "ws", 1) + "/api/v1/tasks/ws?all=true"
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(ws_url) as live:
            index = TaskIndex(client)
            task_id = str(uuid.uuid4())

            async def progress_seen() -> dict | None:
                index.feed("progress", task_id, {"percent": 50, "message": "half"})
                msg = await live.receive(timeout=2)
                event = json.loads(msg.data)
                return event if event.get("task_id") == task_id else None

            seen = await async_wait_until(progress_seen, 20, 0, "a feed event on the socket")
            last_id = seen["id"]

            # The promoted replica's history ends before what the gateway read.
            client.delete(FEED_STREAM)
            client.xadd(FEED_STREAM, {"event": json.dumps({"type": "stats"})}, id="1-1")
            client.client_kill_filter(_type="normal", skipme=True)

            resync = await received(live, "resync")
            assert "failover" in resync["reason"]

            # A client resuming from an id the stream no longer reaches: resync too.
            async with http.ws_connect(f"{ws_url}&last_event_id={last_id}") as resuming:
                assert (await received(resuming, "resync"))["reason"]
    finally:
        client.close()
