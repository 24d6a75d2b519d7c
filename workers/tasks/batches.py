"""Batches: many submissions in one request, run as ordinary tasks linked to their batch.

`POST /api/v1/batches` (service/views/batches.py) validates every item as its endpoint
would, stores them (`batch_items_key`) with the batch's hash (`batch_key`: owner, total),
and submits `run_batch` under the batch's id: the batch is a task of its owner, with a
record, a status, a feed and, if asked, a webhook. `run_batch` publishes the items in
order as tasks `<batch id>-<n>` carrying the batch's id (indexed and counted per state by
record.lua), resuming from `published` when run again, then seals the batch and stays
STARTED. As each item ends, record.lua counts it; once a sealed batch's published items
have all ended it announces `batch_done` (batch_done.lua), the worker's webhook dispatcher
submits `finish_batch`, and the batch's record ends SUCCESS with its counts (REVOKED if it
was cancelled), which fires its `completed` webhook like any task's.

Cancelling (`POST /api/v1/batches/{id}/cancel`) marks the batch: `run_batch` publishes no
more items and seals it, and a bulk cancel stops the items not started yet.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from celery.exceptions import Ignore

from workers.celery_app import celery_app
from workers.core import queues
from workers.core.headers import BATCH_HEADER, METADATA_HEADER, OWNER_HEADER, TAGS_HEADER
from workers.core.keys import batch_items_key, batch_key, counts_key
from workers.runtime.base import BaseTaskWithRetry
from workers.runtime.clients import redis_client
from workers.runtime.progress import report_progress
from workers.taskindex.lua_scripts import seal_batch_call, source

logger = logging.getLogger(__name__)

# Items published between two looks at the batch (cancelled?) and progress reports.
CHUNK = 100


def item_id(batch_id: str, n: int) -> str:
    """Item `n` (0-based) of a batch: the same id however often the batch is expanded."""
    return f"{batch_id}-{n}"


@celery_app.task(name=queues.RUN_BATCH, base=BaseTaskWithRetry, bind=True)
def run_batch(self: Any, batch_id: str) -> None:
    """Publish the batch's items, then seal it. The task stays STARTED (Ignore) until its
    items have all ended and `finish_batch` ends it."""
    client = redis_client()
    key = batch_key(batch_id)
    owner, total_text = (str(v or "") for v in client.hmget(key, "owner", "total"))
    total = int(total_text or 0)
    while True:
        published, cancelled = client.hmget(key, "published", "cancelled")
        start = int(published or 0)
        if cancelled == "1":
            break
        chunk = client.lrange(batch_items_key(batch_id), start, start + CHUNK - 1)
        if not chunk:
            break
        for n, text in enumerate(chunk, start):
            _publish(batch_id, n, owner, json.loads(text))
        client.hincrby(key, "published", len(chunk))
        done = start + len(chunk)
        report_progress(batch_id, 100 * done / max(total, 1), f"{done} of {total} submitted")
    keys, args = seal_batch_call(batch_id, time.time())
    client.register_script(source("seal_batch"))(keys=keys, args=args)
    client.delete(batch_items_key(batch_id))
    if client.hget(key, "cancelled") == "1":
        # Items published before the cancel was seen: cancelled too (those not started).
        celery_app.send_task(
            queues.BULK_ACTION, queue=queues.TASK_QUEUES[queues.BULK_ACTION],
            kwargs={"action": "cancel", "filters": {"batch": batch_id, "owner": owner},
                    "requested_by": owner},
            headers={OWNER_HEADER: owner},
        )  # fmt: skip
    raise Ignore()  # STARTED until its items have ended (`finish_batch`)


def _publish(batch_id: str, n: int, owner: str, item: dict[str, Any]) -> None:
    options = item.get("options") or {}
    headers = {OWNER_HEADER: owner, BATCH_HEADER: batch_id}
    if item.get("tags"):
        headers[TAGS_HEADER] = item["tags"]
    if item.get("metadata"):
        headers[METADATA_HEADER] = item["metadata"]
    celery_app.send_task(
        item["name"], kwargs=item["kwargs"], task_id=item_id(batch_id, n),
        queue=queues.TASK_QUEUES.get(item["name"]), headers=headers,
        priority=options.get("priority"), countdown=options.get("countdown"),
        eta=options.get("eta"),
    )  # fmt: skip


@celery_app.task(name=queues.FINISH_BATCH, base=BaseTaskWithRetry)
def finish_batch(batch_id: str) -> dict[str, Any]:
    """End the batch's record: SUCCESS with its counts (REVOKED if it was cancelled)."""
    client = redis_client()
    published, cancelled = client.hmget(batch_key(batch_id), "published", "cancelled")
    counts = client.hgetall(counts_key("batch_id", batch_id))
    summary = {
        "batch_id": batch_id, "total": int(published or 0), "cancelled": cancelled == "1",
        "counts": {state: int(n) for state, n in counts.items() if int(n)},
    }  # fmt: skip
    if cancelled == "1":
        celery_app.backend.mark_as_revoked(batch_id, "batch cancelled")
    else:
        celery_app.backend.store_result(batch_id, summary, "SUCCESS")
    logger.info("batch %s finished: %s", batch_id, summary["counts"])
    return summary
