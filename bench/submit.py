"""1. Submission throughput: POST /ai/generate with N concurrent HTTP clients (nobody
consumes the queue: pure publish cost) vs. plain Celery `apply_async` in a loop.

    python -m bench.submit --size small
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from bench.common import Row, Stack, queue_length, sampling
from bench.main import cli

SIZES = {"tiny": (300, 8), "small": (5000, 32), "full": (20000, 32)}
BODY = {"conversation_id": "bench", "user_message": "hi"}


async def http_submissions(base: str, count: int, clients: int) -> tuple[float, int]:
    url = f"{base}/api/v1/tasks/ai/generate"
    left = count
    bad = 0

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal left, bad
        while left > 0:
            left -= 1
            async with session.post(url, json=BODY) as resp:
                await resp.read()
                bad += resp.status != 202

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.post(url, json=BODY) as resp:  # warm-up
            await resp.read()
        start = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        return time.perf_counter() - start, bad


def run(stack: Stack, size: str) -> list[Row]:
    count, clients = SIZES[size]
    gateway, base = stack.shared_gateway()
    with sampling(gateway.pid) as gw:
        seconds, bad = asyncio.run(http_submissions(base, count, clients))
    queued = queue_length(stack.redis, "ai_high_priority")
    ours = count / seconds
    bare, bare_base = stack.bare_http()
    try:
        ceiling, _ = asyncio.run(http_submissions(bare_base, count, clients))
    finally:
        stack.stop(bare)
    plain = stack.run_json(["-m", "bench.bare_client", "submit", str(count), "bench_bare_submit"])
    client = stack.run_json(["-m", "bench.our_client", "submit", str(count), "bench_submit"])
    stack.flush()
    note = (
        f"{clients} HTTP clients, {count} tasks, {bad} non-202, {queued} queued; gateway "
        f"CPU {gw['cpu_percent']:.0f}% of a core"
    )
    return [
        Row("submit", "HTTP ai/generate", ours, plain["per_second"], "tasks/s", ("ge", 2.0),
            "plain apply_async loop", note),
        Row("submit", "bare aiohttp POST, no publish", count / ceiling, plain["per_second"],
            "tasks/s", None, "plain apply_async loop",
            f"the HTTP ceiling here: {clients} clients against a handler that reads the body "
            "and answers 202; nothing is validated or published"),
        Row("submit", "our app send_task loop", client["per_second"], plain["per_second"],
            "tasks/s", None, "plain apply_async loop",
            "one process, our Celery app with its publish hook (index record per task)"),
    ]  # fmt: skip


if __name__ == "__main__":
    cli(run)
