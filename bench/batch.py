"""Batches (issue 17): a batch of in-app notifications, from `POST /api/v1/batches` (JSON
Lines) until the batch's record is SUCCESS (every item ended and counted), against single
submissions (one request each, driven by wrk: one thread, 32 connections, for a few
seconds) from the first request until every accepted one has succeeded. The same gateway
and one worker (`-c 2`) for both; tasks per second of each.

    python -m bench.batch --size small
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

from bench.common import Row, Stack, wait_until
from bench.loadgen import wrk
from bench.main import cli
from workers.core.keys import counts_key

# (items in the batch, seconds of wrk for the single submissions)
SIZES = {"tiny": (200, 1.0), "small": (2_000, 3.0), "full": (10_000, 10.0)}
BODY = {"channel": "in_app", "recipient": "dev", "message": "bench"}
QUEUES = "default,notification_default"


def _request(url: str, data: bytes | None = None, content_type: str = "") -> Any:
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET")  # noqa: S310
    if content_type:
        req.add_header("Content-Type", content_type)
    with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310 - loopback only
        return json.load(resp)


def run(stack: Stack, size: str) -> list[Row]:
    count, seconds = SIZES[size]
    _, base = stack.shared_gateway()
    worker = stack.worker("ours", QUEUES, concurrency=2)
    try:
        # Ours: one request, every item run, the batch ended.
        lines = "\n".join(json.dumps({"task": "notifications/send", "body": BODY})
                          for _ in range(count)).encode()  # fmt: skip
        started = time.perf_counter()
        answer = _request(f"{base}/api/v1/batches", lines, "application/x-ndjson")
        accepted = time.perf_counter() - started
        batch_url = f"{base}/api/v1/batches/{answer['batch_id']}?limit=1"
        published_at: list[float] = []

        def finished() -> bool:
            body = _request(batch_url)
            if body["published"] == count and not published_at:
                published_at.append(time.perf_counter() - started)
            return bool(body["status"] == "SUCCESS")

        wait_until(finished, 600, "the batch done")
        batch_seconds = time.perf_counter() - started
        counts = _request(batch_url)["counts"]
        stack.flush()

        # Baseline: as many single submissions, until as many have succeeded.
        started = time.perf_counter()
        load = wrk(f"{base}/api/v1/tasks/notifications/send", seconds, post=BODY)
        wait_until(lambda: _succeeded(stack) >= load.requests - load.non_2xx, 600,
                   "the single submissions done")  # fmt: skip
        single_seconds = time.perf_counter() - started
        singles = load.requests - load.non_2xx
    finally:
        stack.stop(worker)
        stack.flush()
    note = (
        f"{count:,} items accepted in {accepted * 1000:.0f} ms (one request), all published "
        f"after {published_at[0] if published_at else float('nan'):.1f} s, batch SUCCESS "
        f"after {batch_seconds:.1f} s ({counts}); baseline: wrk -t1 -c32 sent {singles:,} "
        f"accepted submissions in {seconds:g} s ({load.note()}), all SUCCESS after "
        f"{single_seconds:.1f} s; "
        "one gateway, one worker -c 2"
    )
    return [
        Row("batch", f"{count:,}-item batch, submit to all done",
            count / batch_seconds, singles / single_seconds, "tasks/s", None,
            "single submissions (wrk)", note),
    ]  # fmt: skip


def _succeeded(stack: Stack) -> int:
    return int(stack.redis.hget(counts_key(), "SUCCESS") or 0)


if __name__ == "__main__":
    cli(run)
