"""What a running task tells its watchers: progress and partial output.

    from workers.progress import report_progress, publish_chunk
    report_progress(self.request.id, 40, "embedding batch 2 of 5")
    publish_chunk(self.request.id, "Hel")

Progress is kept on the task's index record (`GET /status/{id}` shows the last one).
Chunks are appended to a per-task list (a late subscriber replays them from the start).
Both are also appended to the live feed stream that the gateway fans out to websockets.
"""

from __future__ import annotations

import json
import time
from typing import Any

from workers.task_index import PREFIX, task_key

FEED_STREAM = f"{PREFIX}feed"
FEED_MAXLEN = 100_000
CHUNKS_TTL = 24 * 3600


def chunks_key(task_id: str) -> str:
    return f"{task_key(task_id)}:chunks"


def feed_event(client: Any, event: dict[str, Any], pipe: Any = None) -> None:
    """Append one event to the live feed (a capped Redis stream)."""
    target = pipe if pipe is not None else client
    target.xadd(
        FEED_STREAM,
        {"event": json.dumps(event, default=str)},
        maxlen=FEED_MAXLEN,
        approximate=True,
    )


def report_progress(
    task_id: str, percent: float, message: str = "", *, client: Any = None
) -> dict[str, Any]:
    from workers.signals import redis_client

    client = client or redis_client()
    progress = {"percent": max(0.0, min(100.0, float(percent))), "message": message}
    now = time.time()
    with client.pipeline(transaction=False) as pipe:
        pipe.hset(task_key(task_id), "progress", json.dumps(progress))
        feed_event(
            client,
            {"type": "progress", "task_id": task_id, "state": "STARTED", "ts": now, **progress},
            pipe,
        )
        pipe.execute()
    return progress


def publish_chunk(task_id: str, text: str, *, client: Any = None) -> int:
    """Append a piece of output; returns its index (0-based) in the task's chunk list."""
    from workers.signals import redis_client

    client = client or redis_client()
    key = chunks_key(task_id)
    with client.pipeline(transaction=False) as pipe:
        pipe.rpush(key, text)
        pipe.expire(key, CHUNKS_TTL)
        results = pipe.execute()
    index = int(results[0]) - 1
    feed_event(
        client,
        {"type": "chunk", "task_id": task_id, "state": "STARTED", "ts": time.time(),
         "index": index, "text": text},
    )  # fmt: skip
    return index


def read_chunks(client: Any, task_id: str) -> list[str]:
    return list(client.lrange(chunks_key(task_id), 0, -1))
