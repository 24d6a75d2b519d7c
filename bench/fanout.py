"""5. Websocket fan-out: delivery delay (p50/p99) of feed events with 1,000 connected
clients at a steady 200 events/s, the gateway's CPU and memory; the baseline is the same
event rate with one client (the feed path's own floor).

Events are progress events appended to the feed stream the way workers append them
(`TaskIndex.feed`, the feed.lua script), each carrying its send time. In "targeted" mode
client i subscribes to task id fan-i and the events go round-robin over those ids (each
event reaches one client: 200 deliveries/s); in "broadcast" mode every client subscribes
to all events (clients x rate deliveries/s, at a lower rate: see SIZES).

    python -m bench.fanout --size full
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

import aiohttp

from bench.common import Row, Stack, pct, proc_stats, sampling
from bench.main import cli

# clients, targeted events/s, broadcast events/s, seconds per phase
SIZES = {"tiny": (50, 200, 10, 1.0), "small": (300, 200, 10, 8.0),
         "full": (1000, 200, 20, 15.0)}  # fmt: skip
WARMUP = 0.5


def produce(stack: Stack, rate: float, seconds: float, targets: int, stop: threading.Event) -> int:
    from workers.taskindex.index import TaskIndex

    index = TaskIndex(stack.redis)
    interval = 1.0 / rate
    next_at = time.perf_counter()
    end = next_at + seconds
    n = 0
    while time.perf_counter() < end and not stop.is_set():
        delay = next_at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        next_at += interval
        index.feed("progress", f"fan-{n % targets}", {"percent": 1.0, "sent": time.time()})
        n += 1
    return n


async def phase(
    stack: Stack, base: str, clients: int, rate: float, seconds: float, broadcast: bool
) -> dict:
    ws_base = base.replace("http", "ws", 1) + "/api/v1/tasks/ws"
    delays: list[float] = []
    received = 0
    measuring = False
    gateway_pid = stack.shared_gateway()[0].pid
    rss_before = proc_stats(gateway_pid)["rss_mb"]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        sockets: list[aiohttp.ClientWebSocketResponse] = []

        async def connect(i: int) -> None:
            query = "all=true" if broadcast else f"task_ids=fan-{i}"
            ws = await session.ws_connect(f"{ws_base}?{query}", heartbeat=None)
            await ws.receive()  # hello
            if not broadcast:
                await ws.receive()  # snapshot of the (unknown) task
            sockets.append(ws)

        for lo in range(0, clients, 100):
            await asyncio.gather(*(connect(i) for i in range(lo, min(clients, lo + 100))))

        async def read(ws: aiohttp.ClientWebSocketResponse) -> None:
            nonlocal received
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                event = json.loads(msg.data)
                if event.get("type") == "progress" and measuring:
                    delays.append((time.time() - event["sent"]) * 1000)
                    received += 1

        readers = [asyncio.create_task(read(ws)) for ws in sockets]
        stop = threading.Event()
        loop = asyncio.get_running_loop()
        producing = loop.run_in_executor(
            None, produce, stack, rate, seconds + WARMUP, max(clients, 1), stop
        )
        await asyncio.sleep(WARMUP)
        measuring = True
        with sampling(gateway_pid) as gw:
            await asyncio.sleep(seconds)
        measuring = False
        stop.set()
        await producing
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    expected = rate * seconds * (clients if broadcast else 1)
    return {"delays": delays, "cpu": gw["cpu_percent"], "rss": gw["rss_mb"],
            "rss_before": rss_before, "delivered": received / expected}  # fmt: skip


def run(stack: Stack, size: str) -> list[Row]:
    clients, rate, broadcast_rate, seconds = SIZES[size]
    _, base = stack.shared_gateway()
    one = asyncio.run(phase(stack, base, 1, rate, seconds, broadcast=False))
    many = asyncio.run(phase(stack, base, clients, rate, seconds, broadcast=False))
    wide = asyncio.run(phase(stack, base, clients, broadcast_rate, seconds, broadcast=True))
    note = (
        f"targeted: {rate} events/s, one client per event, {many['delivered']:.0%} delivered; "
        f"gateway CPU {one['cpu']:.0f}% (1 client) -> {many['cpu']:.0f}% ({clients} clients) "
        f"of a core"
    )
    wide_note = (
        f"broadcast: {broadcast_rate} events/s to all {clients} clients "
        f"({broadcast_rate * clients:,} deliveries/s), {wide['delivered']:.0%} delivered; "
        f"gateway CPU {wide['cpu']:.0f}% of a core; clients in one Python process (2 cores "
        f"shared with the gateway and Redis)"
    )
    label = "1 client, same rate"
    return [
        Row("fanout", f"{clients} clients delay p50", pct(many["delays"], 50),
            pct(one["delays"], 50), "ms", None, label, note),
        Row("fanout", f"{clients} clients delay p99", pct(many["delays"], 99),
            pct(one["delays"], 99), "ms", None, label, abs_max=100.0),
        Row("fanout", f"{clients} clients gateway CPU", many["cpu"], one["cpu"], "% core",
            None, label),
        Row("fanout", f"{clients} clients gateway RSS", many["rss"], one["rss"], "MB", None,
            label),
        Row("fanout", f"broadcast {clients} delay p50", pct(wide["delays"], 50),
            pct(one["delays"], 50), "ms", None, label, wide_note),
        Row("fanout", f"broadcast {clients} delay p99", pct(wide["delays"], 99),
            pct(one["delays"], 99), "ms", None, label),
    ]  # fmt: skip


if __name__ == "__main__":
    cli(run)
