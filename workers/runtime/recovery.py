"""Republish accepted tasks whose message vanished from Redis.

Kombu's Redis transport takes a message with BRPOP and only then records it as
unacknowledged. A worker's main process killed in between (kill -9, OOM killer) takes
the message with it: the task stays PENDING forever. The task index still knows the
task (name, queue, priority, arguments), so the message can be rebuilt.

The same happens to a message put back on its queue after the worker process running
it died (the task's record then says STARTED, released). A task is recovered when it is
unfinished (PENDING, STARTED or RETRY), nobody holds a claim on it, nothing happened to
it within the grace period, it is not delayed into the future, and its message is in no
queue list and not among the unacknowledged ones. A message popped a moment ago and not yet
recorded could look lost; republishing it is safe all the same: the claim before
execution lets only one of the two copies run.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import datetime
from typing import Any

from celery import Celery

from workers.core.keys import KOMBU_UNACKED_INDEX_KEY, KOMBU_UNACKED_KEY, index_key, task_key
from workers.runtime.queue_depth import priority_keys
from workers.taskindex.record import TaskRecord

logger = logging.getLogger(__name__)

SCAN_OLDEST = 500
# Above this many waiting messages a queue is not searched: a task in it is more likely
# waiting its turn than lost, and the search would cost too much.
MAX_SEARCHED_DEPTH = 20_000
# What deciding and rebuilding needs of a record (`TaskRecord.send_options`).
FIELDS = ("state", "claimed", "claimed_at", "recovered_at", "submitted_at",
          "updated_at", "eta", "name", "queue", "priority", "args", "kwargs", "owner",
          "timelimit", "args_truncated")  # fmt: skip
UNFINISHED = ("PENDING", "STARTED", "RETRY")


def _ids_in(raw_messages: list[str]) -> set[str]:
    ids = set()
    for raw in raw_messages:
        try:
            message = json.loads(raw)
            if isinstance(message, list):  # unacked entries: [message, exchange, key]
                message = message[0]
            ids.add(message["headers"]["id"])
        except (ValueError, KeyError, TypeError, IndexError):
            continue
    return ids


def _eta_passed(eta: str | None, now: float) -> bool:
    if not eta:
        return True
    try:
        return (
            datetime.fromisoformat(json.loads(eta) if eta.startswith('"') else eta).timestamp()
            <= now
        )
    except ValueError:
        return True


def find_lost(
    client: Any, now: float, grace: float, visibility: float = 3600.0
) -> list[TaskRecord]:
    """Records of unfinished, unclaimed tasks whose message is nowhere in Redis."""
    candidates = _quiet_unfinished(client, now, grace)
    if not candidates:
        return []
    # Held by a worker: in kombu's unacknowledged hash *and* its index, which the sweep
    # that gives messages of dead workers back reads, delivered within the grace period.
    # An entry missing from the index (a crash between kombu's two writes) never comes
    # back on its own. Nor, before the visibility timeout, does one whose consumer was
    # reset by a broker outage before the task started: with late acks and a prefetch of
    # one, a worker holds a message unclaimed only for the moment before it runs (ETAs
    # aside, see above), so an unclaimed entry older than the grace period is stranded.
    # Were it still held (a larger prefetch), the copy is harmless: the claim lets one run.
    since = now - min(grace, visibility)
    recent = set(client.zrangebyscore(KOMBU_UNACKED_INDEX_KEY, since, "+inf"))
    unacked = client.hgetall(KOMBU_UNACKED_KEY)
    in_flight = _ids_in([raw for tag, raw in unacked.items() if tag in recent])
    queued: dict[str, set[str] | None] = {}
    lost = []
    for record, stuck_claim in candidates:
        if stuck_claim:
            lost.append(record)
            continue
        if record.task_id in in_flight:
            continue
        queue = record.queue or "default"
        if queue not in queued:
            keys = priority_keys(queue)
            depth = sum(client.llen(k) for k in keys)
            queued[queue] = (
                None if depth > MAX_SEARCHED_DEPTH
                else _ids_in([m for k in keys for m in client.lrange(k, 0, -1)])
            )  # fmt: skip
        ids = queued[queue]
        if ids is not None and record.task_id not in ids:
            lost.append(record)
    return lost


def _quiet_unfinished(client: Any, now: float, grace: float) -> list[tuple[TaskRecord, bool]]:
    """The oldest unfinished records, untouched for `grace` seconds and unclaimed or with a
    claim that never started, each with whether its claim is stuck."""
    oldest = [
        task_id
        for state in UNFINISHED
        for task_id in client.zrange(index_key("state", state), 0, SCAN_OLDEST - 1)
    ]
    candidates: list[tuple[TaskRecord, bool]] = []  # (record, its claim is stuck)
    with client.pipeline(transaction=False) as pipe:
        for task_id in oldest:
            pipe.hmget(task_key(task_id), FIELDS)
        rows = pipe.execute()
    for task_id, row in zip(oldest, rows, strict=True):
        record = TaskRecord.from_hash({**dict(zip(FIELDS, row, strict=True)), "task_id": task_id})
        if record.state not in UNFINISHED or not record.name:
            continue
        if (record.recovered_at or 0) > now - grace:
            continue  # republished a moment ago
        # A claim is taken with STARTED, right before the task runs; a claim left
        # without STARTED (a record from before that, a task without `track_started`)
        # for the grace period belongs to a delivery its worker dropped. Such a task
        # counts as lost wherever its message is.
        stuck_claim = bool(
            record.claimed and record.state == "PENDING"
            and (record.claimed_at or now) < now - grace
        )  # fmt: skip
        if record.claimed and not stuck_claim:
            continue
        last_change = max(record.submitted_at or now, record.updated_at or 0)
        if last_change > now - grace or not _eta_passed(record.eta, now - grace):
            continue
        candidates.append((record, stuck_claim))
    return candidates


def republish(app: Celery, record: TaskRecord) -> None:
    """Send the task again as it was first sent, under its own id."""
    assert record.name is not None  # find_lost passes named records only
    # (Celery takes float time limits; its type stubs say int.)
    app.send_task(record.name, task_id=record.task_id, **record.send_options())  # type: ignore[arg-type]


def recover_lost(
    app: Celery, client: Any, grace: float, visibility: float, now: float | None = None
) -> list[str]:
    """Republish every lost task found; the ids republished."""
    now = now if now is not None else time.time()
    recovered = []
    for record in find_lost(client, now, grace, visibility):
        if record.args_truncated:
            logger.error("task %s is lost and too large to rebuild", record.task_id)
            continue
        republish(app, record)
        client.hset(task_key(record.task_id), "recovered_at", repr(now))
        logger.warning("republished lost task %s[%s]", record.name, record.task_id)
        recovered.append(record.task_id)
    return recovered
