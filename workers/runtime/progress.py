"""What a running task tells its watchers: progress and partial output.

    from workers.runtime.progress import report_progress, publish_chunk
    report_progress(self.request.id, 40, "embedding batch 2 of 5")
    publish_chunk(self.request.id, "Hel")

Progress is kept on the task's index record (`GET /status/{id}` shows the last one).
Chunks are appended to a per-task list (a late subscriber replays them from the start).
Both are appended to the live feed stream that the gateway fans out to websockets, in
one script with the record update, so a chunk's index and its event agree.
"""

from __future__ import annotations

import json
import time
from typing import Any

from workers.core.keys import FEED_MAXLEN, FEED_STREAM, chunks_key


def feed_event(client: Any, event: dict[str, Any], pipe: Any = None) -> None:
    """Append one event that is not about a task (a notification) to the live feed."""
    target = pipe if pipe is not None else client
    event.setdefault("ts", time.time())
    target.xadd(
        FEED_STREAM,
        {"event": json.dumps(event, default=str)},
        maxlen=FEED_MAXLEN,
        approximate=True,
    )


def report_progress(task_id: str, percent: float, message: str = "") -> dict[str, Any]:
    from workers.runtime.clients import task_index

    progress = {"percent": max(0.0, min(100.0, float(percent))), "message": message}
    task_index().feed("progress", task_id, progress)
    return progress


def publish_chunk(task_id: str, text: str) -> int:
    """Append a piece of output; returns its index (0-based) in the task's chunk list."""
    from workers.runtime.clients import task_index

    index, _ = task_index().feed("chunk", task_id, {"text": text}, chunk=text)
    return index


def reset_output(task_id: str) -> None:
    """Forget a task's output so far (a retried attempt streams it again from the start):
    its chunk list is emptied and watchers get a `chunks_reset` event."""
    from workers.runtime.clients import task_index

    task_index().feed("chunks_reset", task_id)


def read_chunks(client: Any, task_id: str) -> list[str]:
    return list(client.lrange(chunks_key(task_id), 0, -1))
