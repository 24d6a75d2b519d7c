"""2. End-to-end latency: submit -> SUCCESS seen on the websocket, for a no-op task at a
steady rate, vs. plain Celery `apply_async().get()` (same rate, same Redis).

Ours: our Celery app publishes `bench.noop` (its publish hook writes the index), our
worker (-E, index via the result backend) runs it, the gateway's feed reader fans the
SUCCESS event out to one websocket subscribed to the queue.

    python -m bench.e2e --size small
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import aiohttp

from bench.common import QUEUE, Row, Stack, pct
from bench.main import cli

SIZES = {"tiny": (20, 40.0), "small": (200, 20.0), "full": (600, 20.0)}


async def websocket_latencies(base: str, count: int, rate: float) -> list[float]:
    from workers.celery_app import celery_app

    # As in the gateway: results are read from the index, not subscribed to per task.
    celery_app.conf.result_backend = "disabled"
    loop = asyncio.get_running_loop()
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    done = asyncio.Event()
    url = f"{base.replace('http', 'ws', 1)}/api/v1/tasks/ws?queues={QUEUE}"
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        hello = json.loads((await ws.receive()).data)
        assert hello["type"] == "hello", hello

        async def reader() -> None:
            async for msg in ws:
                event = json.loads(msg.data)
                if event.get("type") == "task" and event.get("state") == "SUCCESS":
                    seen[event["task_id"]] = time.perf_counter()
                    if len(seen) >= count + 1:
                        done.set()

        reading = loop.create_task(reader())

        def send(task_id: str) -> None:
            sent[task_id] = time.perf_counter()
            celery_app.send_task("bench.noop", queue=QUEUE, task_id=task_id)

        await loop.run_in_executor(None, send, "warm-up")
        interval = 1.0 / rate
        next_at = time.perf_counter()
        for _ in range(count):
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            next_at += interval
            await loop.run_in_executor(None, send, str(uuid.uuid4()))
        try:
            await asyncio.wait_for(done.wait(), 30)
        finally:
            reading.cancel()
    return [seen[t] - sent[t] for t in sent if t in seen and t != "warm-up"]


def run(stack: Stack, size: str) -> list[Row]:
    count, rate = SIZES[size]
    _, base = stack.shared_gateway()
    worker = stack.worker("ours", QUEUE)
    try:
        ours = [x * 1000 for x in asyncio.run(websocket_latencies(base, count, rate))]
    finally:
        stack.stop(worker)
    worker = stack.worker("bare", "bench_bare")
    try:
        plain = stack.run_json(["-m", "bench.bare_client", "roundtrip", str(count), str(rate)])
    finally:
        stack.stop(worker)
    plain_ms = [x * 1000 for x in plain["latencies"]]
    note = f"{count} no-op tasks at {rate:g}/s; {len(ours)} SUCCESS events seen on the websocket"
    return [
        Row("e2e", "submit->SUCCESS p50", pct(ours, 50), pct(plain_ms, 50), "ms", ("le", 1.5),
            "apply_async().get()", note),
        Row("e2e", "submit->SUCCESS p95", pct(ours, 95), pct(plain_ms, 95), "ms", None,
            "apply_async().get()"),
        Row("e2e", "submit->SUCCESS p99", pct(ours, 99), pct(plain_ms, 99), "ms", ("le", 2.0),
            "apply_async().get()"),
    ]  # fmt: skip


if __name__ == "__main__":
    cli(run)
