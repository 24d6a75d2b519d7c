"""Celery signal receivers: a new task's record handed to the code that writes it with its
message (publish), the worker registry kept current, Redis checked at start-up."""

from __future__ import annotations

import gc
import logging
import os
from typing import Any

import redis
from celery.signals import (
    after_task_publish,
    beat_init,
    before_task_publish,
    celeryd_init,
    heartbeat_sent,
    worker_before_create_process,
    worker_init,
    worker_ready,
    worker_shutdown,
)
from celery.worker import state as worker_state

# Imported for the Celery signal receivers they connect: our logging, WORKER_QUEUES,
# tracing (on only when OTEL_* variables ask for it).
import workers.runtime.logs
import workers.runtime.queue_selection
import workers.runtime.tracing  # noqa: F401
from workers.core import queues
from workers.core.headers import (
    DEFERRED_HEADER,
    INDEXED_HEADER,
    RECORD_HEADER,
    SCHEDULE_HEADER,
)
from workers.core.redis_client import sync_redis
from workers.core.settings import get_settings
from workers.notify.task_webhooks import Dispatcher
from workers.runtime import registry
from workers.runtime.clients import redis_client, task_index
from workers.runtime.housekeeping import Housekeeper
from workers.runtime.internals import exit_unless_internals_hold
from workers.runtime.rate_limit import undeclarable_rates
from workers.runtime.recovery import recover_lost
from workers.runtime.task_events import batch_task_events
from workers.taskindex.lua_scripts import RecordUpdate
from workers.taskindex.record import publish_fields

logger = logging.getLogger(__name__)


@before_task_publish.connect
def _on_publish(
    sender: str | None = None,
    body: Any = None,
    routing_key: str | None = None,
    headers: dict | None = None,
    properties: dict | None = None,
    **_: Any,
) -> None:
    """A new task's record goes with its message, in the headers (`RECORD_HEADER`), to the
    transport that writes both in one script (`workers.runtime.priority`)."""
    if headers is None:
        return
    if sender and sender != queues.canonical_name(sender):
        # One of the source document's names: the message carries the task's own name,
        # so workers, Flower and the index see one name.
        sender = headers["task"] = queues.canonical_name(sender)
    task_id = headers.get("id")
    if not task_id or not sender or headers.get(DEFERRED_HEADER) or headers.get(INDEXED_HEADER):
        # A duplicate delivery put back to be checked later, or a task its publisher
        # recorded: not a new record (nor an old one, carried over by another transport).
        headers.pop(RECORD_HEADER, None)
        return
    retries = int(headers.get("retries") or 0)
    ttl = get_settings().task_history_ttl
    if retries:
        # A retry republishes the same task: its record and state (RETRY) stay.
        update = RecordUpdate(
            task_id=task_id, attempt=retries, fields={"eta": headers.get("eta")}, ttl=ttl
        )
    else:
        fields = publish_fields(sender, body, routing_key, headers, properties or {})
        # Beat firing an owner's schedule (`workers.runtime.schedules`).
        fields["schedule_id"] = headers.get(SCHEDULE_HEADER)
        update = RecordUpdate(task_id=task_id, state="PENDING", attempt=0, fields=fields, ttl=ttl)
    headers[RECORD_HEADER] = update.to_header()


@after_task_publish.connect
def _on_published(headers: dict | None = None, **_: Any) -> None:
    """The record of a message published by another transport than ours (which takes the
    header out once it wrote the record with the message)."""
    carried = (headers or {}).pop(RECORD_HEADER, None)
    if carried is None:
        return
    update = RecordUpdate.from_header(carried)
    try:
        task_index().apply(update)
    except redis.exceptions.RedisError as exc:
        logger.warning("task index not updated on publish of %s: %s", update.task_id, exc)


def check_eviction_policy(client: Any) -> str | None:
    """Warn unless Redis runs with `noeviction`: evicting queue keys silently loses tasks."""
    try:
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy")
    except redis.exceptions.ResponseError:
        return None  # CONFIG is disabled on some managed Redis offerings
    if policy != "noeviction":
        logger.warning(
            "Redis maxmemory-policy is %r: under memory pressure Redis may evict queue and "
            "task keys and lose tasks; set it to 'noeviction'",
            policy,
        )
    return policy


# A worker or Beat refuses to start without the Celery/kombu internals it relies on.
celeryd_init.connect(exit_unless_internals_hold)
beat_init.connect(exit_unless_internals_hold)


@worker_init.connect
def _check_tasks(sender: Any = None, **_: Any) -> None:
    """Task events in batches (`workers.runtime.task_events`). Once the task modules are
    imported: a worker refuses to start when a task's
    `rate_limit` cannot be enforced (it would otherwise run unlimited), and it runs the
    source document's names of the built-in tasks as those tasks (another client's message
    may carry them)."""
    batch_task_events()
    tasks = sender.app.tasks
    problems = undeclarable_rates(tasks)
    if problems:
        raise SystemExit("tasks with a rate_limit that cannot be enforced: " + "; ".join(problems))
    for alias, name in queues.DOCUMENT_ALIASES.items():
        if name in tasks and alias not in tasks:
            tasks[alias] = tasks[name]


# The worker's own threads (webhook dispatch, housekeeping), stopped at its shutdown.
_threads: list[Dispatcher | Housekeeper] = []


def _publish_delivery(task_id: str, event: str, seq: int) -> None:
    from workers.celery_app import celery_app

    if event == "batch_done":  # the last item of batch `task_id` ended (batch_done.lua)
        celery_app.send_task(
            queues.FINISH_BATCH, kwargs={"batch_id": task_id},
            queue=queues.TASK_QUEUES[queues.FINISH_BATCH],
        )  # fmt: skip
        return
    celery_app.send_task(
        queues.DELIVER_TASK_WEBHOOK, kwargs={"task_id": task_id, "event": event, "seq": seq},
        queue=queues.TASK_QUEUES[queues.DELIVER_TASK_WEBHOOK],
    )  # fmt: skip


@worker_ready.connect
def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    app = sender.app
    hostname = sender.hostname
    client = redis_client()
    check_eviction_policy(client)
    # Task events a webhook asked for become delivery tasks (workers/notify/task_webhooks.py).
    settings = get_settings()
    _threads.append(Dispatcher(sync_redis(settings), _publish_delivery, hostname))
    # Lost messages are looked for here, not by a Beat task a minute.
    _threads.append(Housekeeper(
        client, settings.task_recovery_interval,
        lambda: recover_lost(app, client, settings.task_recovery_grace,
                             settings.broker_visibility_timeout),
    ))  # fmt: skip
    for thread in _threads:
        thread.start()
    registry.record_worker(
        client,
        hostname,
        {
            "queues": sorted(app.amqp.queues.consume_from or app.amqp.queues),
            "concurrency": sender.pool.num_processes if sender.pool else None,
            "pid": os.getpid(),
        },
    )


@heartbeat_sent.connect
def _on_heartbeat(sender: Any = None, **_: Any) -> None:
    try:
        registry.record_heartbeat(redis_client(), sender.eventer.hostname)
        # Claims of the tasks this worker is running stay fresh (see claim.lua).
        task_index().refresh(
            [
                (request.id, request.claim_token)
                for request in list(worker_state.active_requests)
                if getattr(request, "claim_token", None)
            ]
        )
    except redis.exceptions.RedisError as exc:
        logger.warning("could not record heartbeat: %s", exc)


@worker_before_create_process.connect
def _freeze_heap_once(**_: Any) -> None:
    """Celery's main process runs `gc.collect()` before forking each pool process, at
    start-up and again whenever a process is recycled (`worker_max_tasks_per_child`):
    about 50 ms over the ~100,000 objects the imports leave. They live as long as the
    process, so they are collected once and then frozen (left out of every later
    collection); the pool processes share their memory pages untouched as well."""
    global _heap_frozen
    if not _heap_frozen:
        gc.collect()
        gc.freeze()
        _heap_frozen = True


_heap_frozen = False


@worker_shutdown.connect
def _on_worker_shutdown(sender: Any = None, **_: Any) -> None:
    for thread in _threads:
        thread.stop()
    try:
        registry.record_offline(redis_client(), sender.hostname)
    except redis.exceptions.RedisError as exc:
        logger.warning("could not record worker shutdown: %s", exc)
