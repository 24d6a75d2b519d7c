"""A worker's task events go out in batches (workers/runtime/task_events.py), and every
one of them still arrives: each task's received, started and succeeded, once."""

from __future__ import annotations

import base64
import json
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import redis

from tests.support.processes import database_url, start_worker, stop_all
from tests.support.waiting import wait_until
from workers.core.settings import Settings
from workers.runtime.celery_config import create_celery_app

DB = 27
TASKS = 60


def _events(message: dict[str, Any]) -> list[dict[str, Any]]:
    body = json.loads(base64.b64decode(json.loads(message["data"])["body"]))
    return body if isinstance(body, list) else [body]


def test_task_events_are_batched_and_each_arrives_once(redis_url: str, log_dir: Path) -> None:
    url = database_url(redis_url, DB)
    client = redis.Redis.from_url(url, decode_responses=True)
    client.flushdb()
    events = client.pubsub(ignore_subscribe_messages=True)
    events.psubscribe(f"/{DB}.celeryev/task.*")
    queue = f"tests_events_{uuid.uuid4().hex[:6]}"
    app = create_celery_app(Settings(redis_url=url))
    done = f"tests:events:{uuid.uuid4().hex}"
    ids = [str(uuid.uuid4()) for _ in range(TASKS)]
    for task_id in ids:  # queued first: the worker then runs them back to back
        app.send_task("tests.record", args=[done, task_id], task_id=task_id, queue=queue)
    worker = start_worker(url, log_dir, queues=queue)
    try:
        _check_events(client, events, ids, done)
    finally:
        stop_all([worker])
        events.close()
        app.close()


def _check_events(client: redis.Redis, events: Any, ids: list[str], done: str) -> None:

    seen: Counter[tuple[str, str]] = Counter()
    messages = 0
    wanted = {(i, t) for i in ids for t in ("task-received", "task-started", "task-succeeded")}

    def all_arrived() -> bool:
        nonlocal messages
        while (message := events.get_message(timeout=0.2)) is not None:
            messages += 1
            for event in _events(message):
                seen[(event["uuid"], event["type"])] += 1
        return wanted <= set(seen)

    wait_until(all_arrived, timeout=60, what="every task's events")
    assert client.llen(done) == TASKS
    assert {key: n for key, n in seen.items() if key in wanted and n != 1} == {}
    # Batched: far fewer messages than events (about one per event before).
    assert messages < len(wanted) / 2, (messages, len(wanted))


class _Consumer:
    """What the batching uses of Celery's consumer: its hub and its flush."""

    def __init__(self, hub: Any) -> None:
        self.hub = hub
        self.flushes = 0

    def _flush_events(self) -> None:
        self.flushes += 1


def test_a_pending_batch_is_flushed_when_the_hub_resets_or_closes() -> None:
    """A broken broker connection resets the worker's hub (a shutdown closes it): Celery's
    queued next-turn flush runs then, and so must a batch waiting for its interval, or its
    events would go with the old dispatcher instead of to Celery's offline buffer."""
    from kombu.asynchronous.hub import Hub

    from workers.runtime.task_events import _on_send_event_buffered

    for end in ("reset", "close"):
        hub = Hub()
        consumer = _Consumer(hub)
        _on_send_event_buffered(consumer)
        _on_send_event_buffered(consumer)  # one flush for the batch
        assert consumer.flushes == 0
        getattr(hub, end)()
        assert consumer.flushes == 1, end
        hub.fire_timers(max_timers=10)  # its timer does not flush again
        assert consumer.flushes == 1, end


def test_a_cancelled_flush_timer_does_not_stop_later_batches() -> None:
    """Celery cancels a connection's timer entries when it reconnects: a batch whose timer
    went that way must not keep every later event waiting for Celery's buffer limit."""
    from kombu.asynchronous.hub import Hub

    from workers.runtime.task_events import EVENT_FLUSH_INTERVAL, _on_send_event_buffered

    hub = Hub()
    consumer = _Consumer(hub)
    _on_send_event_buffered(consumer)
    for scheduled in list(hub.timer.queue):  # as Consumer._cancel_connection_timer_entries
        scheduled.entry.cancel()
    _on_send_event_buffered(consumer)

    def flushed() -> bool:
        hub.fire_timers(max_timers=10)
        return consumer.flushes == 1

    wait_until(flushed, timeout=max(1.0, 50 * EVENT_FLUSH_INTERVAL), what="the batch's flush")
