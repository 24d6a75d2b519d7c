"""`/metrics` in Prometheus text format.

Task counts and queue depths are read from Redis at scrape time (they are shared by every
replica). Request latencies and the websocket count are kept by each process; with several
gateway processes (WEB_CONCURRENCY > 1) they are written to prometheus_client's
multiprocess files and every scrape adds up those of all the processes.

The page shows every owner's counts and the queues: it is operators' data, read with an
admin key or with METRICS_TOKEN, the scrapers' token (checked in service/middlewares.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

from service.keys import redis_key, task_store_key
from workers.core.queues import QUEUES
from workers.runtime.queue_depth import priority_keys

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    """The gateway's own metrics; `multiprocess_dir` when it runs in several processes."""

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        self.registry = CollectorRegistry()
        self.api_latency = Histogram(
            "claw_api_request_seconds", "API request latency", ["method", "route", "status"],
            registry=self.registry, buckets=LATENCY_BUCKETS,
        )  # fmt: skip
        self.submit_latency = Histogram(
            "claw_task_submit_seconds", "Time to publish a submitted task", ["task"],
            registry=self.registry, buckets=LATENCY_BUCKETS,
        )  # fmt: skip
        self.websocket_clients = Gauge(
            "claw_websocket_clients", "Connected websocket clients",
            registry=self.registry, multiprocess_mode="livesum",
        )  # fmt: skip

        # Histogram.labels() validates and looks up its labels on every call: the children
        # of the few (method, route, status) seen are kept.
        self._latency_children: dict[tuple[str, str, int], Any] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        child = self._latency_children.get(key)
        if child is None:
            child = self.api_latency.labels(method, route, str(status))
            if len(self._latency_children) < 4096:  # bounded: methods and routes are
                self._latency_children[key] = child
        child.observe(seconds)

    def scraped(self) -> CollectorRegistry:
        """What a scrape shows: this process's metrics, or those of every process."""
        if self.multiprocess_dir is None:
            return self.registry
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)
        return registry


metrics_key = web.AppKey("metrics", Metrics)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def metrics_view(request: web.Request) -> web.Response:
    client = request.app[redis_key]
    store = request.app[task_store_key]
    by_queue = await store.counts_by_queue(QUEUES)
    counts = await store.counts()
    async with client.pipeline(transaction=False) as pipe:
        for name in QUEUES:
            for key in priority_keys(name):
                pipe.llen(key)
        lengths = await pipe.execute()
    steps = len(priority_keys(QUEUES[0]))

    tasks = GaugeMetricFamily("claw_tasks", "Tasks in the index by state", labels=["state"])
    for state, n in counts.items():
        tasks.add_metric([state], n)
    per_queue = GaugeMetricFamily(
        "claw_queue_tasks", "Tasks in the index by queue and state", labels=["queue", "state"]
    )
    for queue, states in by_queue.items():
        for state, n in states.items():
            per_queue.add_metric([queue, state], n)
    depth = GaugeMetricFamily("claw_queue_depth", "Messages waiting", labels=["queue"])
    for i, name in enumerate(QUEUES):
        depth.add_metric([name], sum(lengths[i * steps : (i + 1) * steps]))
    body = generate_latest(request.app[metrics_key].scraped()).decode()
    scrape = CollectorRegistry()

    class _Now:
        def collect(self) -> list[GaugeMetricFamily]:
            return [tasks, per_queue, depth]

    scrape.register(_Now())
    body += generate_latest(scrape).decode()
    return web.Response(text=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
