"""4b. Flower beside our index: N no-op tasks really run (our worker, -E) while Flower
watches the events; then Flower's `/api/tasks?limit=50` vs. our
`GET /list?limit=50&status=SUCCESS` on that same workload, and both processes' memory.
Flower keeps tasks in memory only: after a restart it is asked again.

    python -m bench.flower --size small
"""

from __future__ import annotations

import asyncio
import time
import urllib.request

import aiohttp

from bench.common import QUEUE, Row, Stack, pct, proc_stats, sequential_latencies, wait_until
from bench.main import cli
from workers.dev.embedded_redis import free_port

SIZES = {"tiny": (50, 10), "small": (3_000, 50), "full": (20_000, 100)}
AUTH = aiohttp.BasicAuth("admin", "admin")


def flower_knows(port: int, task_id: str) -> bool:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/task/info/{task_id}")
    request.add_header("Authorization", AUTH.encode())
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310 - loopback
            return b'"SUCCESS"' in resp.read()
    except OSError:
        return False


async def flower_pages(port: int, requests: int) -> tuple[list[float], int]:
    url = f"http://127.0.0.1:{port}/api/tasks?limit=50"
    async with aiohttp.ClientSession(auth=AUTH) as session:
        times = await sequential_latencies(session, [url] * requests)
        async with session.get(url) as resp:
            held = len(await resp.json())
    return times, held


async def our_pages(base: str, requests: int) -> list[float]:
    async with aiohttp.ClientSession() as session:
        return await sequential_latencies(
            session, [f"{base}/api/v1/tasks/list?limit=50&status=SUCCESS"] * requests
        )


def run(stack: Stack, size: str) -> list[Row]:
    count, requests = SIZES[size]
    gateway, base = stack.shared_gateway()
    port = free_port()
    flower = stack.flower(port, max_tasks=max(count * 2, 10_000))
    worker = stack.worker("ours", QUEUE)
    try:
        sent = stack.run_json(["-m", "bench.our_client", "submit", str(count), QUEUE])
        wait_until(lambda: flower_knows(port, sent["last_id"]), 60 + count / 50,
                   "Flower to see the last task")  # fmt: skip
        time.sleep(1.0)
        flower_ms, held = asyncio.run(flower_pages(port, requests))
        flower_rss = proc_stats(flower.pid)["rss_mb"]
        ours_ms = asyncio.run(our_pages(base, requests))
        gateway_rss = proc_stats(gateway.pid)["rss_mb"]
    finally:
        stack.stop(worker)
        stack.stop(flower)
    held_after: int | str = "not asked (tiny run)"
    if size != "tiny":
        flower = stack.flower(port, max_tasks=max(count * 2, 10_000))
        try:
            _, held_after = asyncio.run(flower_pages(port, 1))
        finally:
            stack.stop(flower)
    note = (
        f"{count:,} tasks run through our worker with events; Flower page held {held} tasks, "
        f"{held_after} after a restart (our index keeps all); {requests} sequential requests"
    )
    return [
        Row("flower", f"list 50 p50 at {count:,} run tasks", pct(ours_ms, 50),
            pct(flower_ms, 50), "ms", None, "Flower /api/tasks?limit=50", note),
        Row("flower", f"list 50 p99 at {count:,} run tasks", pct(ours_ms, 99),
            pct(flower_ms, 99), "ms", None, "Flower /api/tasks?limit=50"),
        Row("flower", "RSS (gateway vs Flower)", gateway_rss, flower_rss, "MB", None,
            "Flower RSS"),
    ]  # fmt: skip


if __name__ == "__main__":
    cli(run)
