"""The Redis result backend, extended to keep the task index in step.

Every state a worker stores (STARTED, RETRY, SUCCESS, FAILURE, REVOKED, and failures from
time limits or lost workers) passes through `_store_result`; the index is updated right
after Celery's own write, from the same request context.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis.exceptions
from celery import states
from celery.backends.redis import RedisBackend, SentinelBackend

from workers.task_index import PREVIEW_CAP, capped_json, preview

logger = logging.getLogger(__name__)


EVENT_RESULT_CAP = 64 * 1024


def feed_extra(result: Any, state: str, fields: dict[str, Any]) -> dict[str, Any]:
    """What the live feed's event for this state carries besides the state itself."""
    extra: dict[str, Any] = {}
    if fields.get("worker"):
        extra["worker"] = fields["worker"]
    if state == states.SUCCESS:
        _, cut = capped_json(result, EVENT_RESULT_CAP)
        extra["result"] = None if cut else result
        if cut:
            extra["result_truncated"] = True
    elif "error_type" in fields:
        extra["error"] = {"type": fields["error_type"], "message": fields["error_message"]}
    return extra


def index_fields(result: Any, state: str, traceback: str | None, request: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if request is not None:
        delivery = getattr(request, "delivery_info", None) or {}
        fields["name"] = getattr(request, "task", None) or getattr(request, "name", None)
        fields["queue"] = delivery.get("routing_key")
        fields["retries"] = str(getattr(request, "retries", 0) or 0)
        hostname = getattr(request, "hostname", None)
        if hostname:
            fields["worker"] = hostname
    now = time.time()
    if state == states.STARTED:
        fields["started_at"] = repr(now)
    elif state == states.SUCCESS:
        fields["result_preview"] = preview(result)
    elif state == states.RETRY:
        # Waiting again: a cancel may still stop it, and any worker may run it next.
        fields["claimed"] = "0"
        fields["claimed_by"] = ""
    if state in (states.FAILURE, states.RETRY, states.REVOKED):
        error = result if isinstance(result, dict) else {}
        fields["error_type"] = error.get("exc_type") or type(result).__name__
        message = error.get("exc_message", result)
        if isinstance(message, list | tuple) and len(message) == 1:
            message = message[0]
        fields["error_message"] = str(message)[: PREVIEW_CAP * 4]
        if traceback:
            fields["traceback"] = capped_json(traceback, 64 * 1024)[0]
    return fields


class _IndexedMixin:
    def _store_result(  # type: ignore[no-untyped-def]
        self, task_id, result, state, traceback=None, request=None, **kwargs
    ):
        stored = super()._store_result(  # type: ignore[misc]
            task_id, result, state, traceback=traceback, request=request, **kwargs
        )
        try:
            from workers.signals import task_index

            attempt = getattr(request, "retries", None) if request is not None else None
            fields = index_fields(result, state, traceback, request)
            task_index().record(
                task_id, state, attempt, event=feed_extra(result, state, fields), **fields
            )
        except redis.exceptions.RedisError as exc:
            logger.warning("task index not updated for %s (%s): %s", task_id, state, exc)
        return stored


class IndexedRedisBackend(_IndexedMixin, RedisBackend):
    pass


class IndexedSentinelBackend(_IndexedMixin, SentinelBackend):
    pass


def backend_url(url: str) -> str:
    """`module:Class+url`: Celery's way to name a backend class for a URL."""
    cls = "IndexedSentinelBackend" if url.startswith("sentinel://") else "IndexedRedisBackend"
    return f"{__name__}:{cls}+{url}"
