"""`deliver_task_webhook`: POST one event of a task to the task's webhook, signed per the
Standard Webhooks specification; every attempt recorded; retried with backoff for
`TASK_WEBHOOK_RETRY_FOR` seconds. See workers/notify/task_webhooks.py for how events
become deliveries."""

from __future__ import annotations

import json
import time
from typing import Any, cast

from workers.celery_app import celery_app
from workers.core import queues
from workers.core.keys import CELERY_RESULT_KEY, task_key
from workers.core.settings import Settings, get_settings
from workers.notify import task_webhooks as hooks
from workers.notify.targets import TargetRefused
from workers.notify.validation import webhook_policy
from workers.notify.webhook import post_signed
from workers.runtime.base import TransientError
from workers.runtime.clients import redis_client
from workers.taskindex.record import decode_hash
from workers.taskindex.status import iso, on_the_wire, status_document


def payload(client: Any, record: dict[str, Any], event: str, seq: int) -> dict[str, Any] | None:
    """What is sent: {"type": "task.<event>", "timestamp", "data"}; `data` is the task's
    status body (started, completed; as the owner's key reads it) or the output event
    (output; None when the log no longer has it)."""
    task_id = record["task_id"]
    data: dict[str, Any] | None
    if event == "output":
        data = hooks.logged_event(client, task_id, seq)
        if data is None:
            return None
        data.pop("owner", None)
        on_the_wire(data)
    else:
        meta_text = client.get(CELERY_RESULT_KEY.format(task_id))
        meta = json.loads(meta_text) if meta_text else None
        data = status_document(record, meta, admin=False)
    return {"type": hooks.event_type(event), "timestamp": iso(time.time()), "data": data}


def backoff(settings: Settings, retries: int) -> float:
    return float(
        min(settings.task_webhook_backoff_base * 2**retries, settings.task_webhook_backoff_max)
    )


@celery_app.task(name=queues.DELIVER_TASK_WEBHOOK, bind=True, max_retries=None)
def deliver_task_webhook(
    self: Any, task_id: str, event: str, seq: int, first_at: float | None = None,
    redelivery: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Deliver event number `seq` (`event`: started, output, completed) of `task_id`."""
    settings = get_settings()
    client = redis_client()
    first_at = first_at or time.time()
    # The record, read once: the webhook, its owner (whose secret signs) and the body.
    raw = cast(dict[str, str], client.hgetall(task_key(task_id)))  # decode_responses
    record = {"task_id": task_id, **decode_hash(raw)}
    webhook, owner = record.get("webhook"), record.get("owner")
    body_doc = payload(client, record, event, seq) if webhook and owner else None
    if webhook is None or owner is None or body_doc is None:
        return {"delivered": False, "reason": "no webhook or no such task"}
    body = json.dumps(body_doc, separators=(",", ":"), default=str).encode()
    message_id = hooks.message_id(task_id, seq)
    headers = hooks.signed_headers(hooks.signing_secrets(client, owner), message_id, body)
    attempt: dict[str, Any] = {
        "webhook_id": message_id, "event": event, "seq": seq, "url": webhook["url"],
        "attempt": self.request.retries + 1, "redelivery": redelivery, "at": iso(time.time()),
        "status_code": None, "error": None, "latency_ms": None,
    }  # fmt: skip
    started = time.perf_counter()
    retry = True
    try:
        status, *_ = post_signed(
            webhook["url"], body, headers, timeout=settings.webhook_timeout,
            policy=webhook_policy(settings),
        )  # fmt: skip
        attempt["status_code"] = status
        if not 200 <= status < 300:
            attempt["error"] = f"answered {status}"
    except TargetRefused as exc:
        attempt["error"] = f"refused: {exc}"
        retry = False  # a forbidden address stays forbidden
    except TransientError as exc:
        attempt["error"] = str(exc)
    attempt["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
    delay = backoff(settings, self.request.retries)
    if attempt["error"] and retry:
        if time.time() + delay - first_at <= settings.task_webhook_retry_for:
            attempt["next_attempt_at"] = iso(time.time() + delay)
            hooks.record_attempt(client, task_id, attempt)
            raise self.retry(
                countdown=delay,
                kwargs={"task_id": task_id, "event": event, "seq": seq, "first_at": first_at,
                        "redelivery": redelivery},
            )  # fmt: skip
        attempt["gave_up"] = True
    hooks.record_attempt(client, task_id, attempt)
    return {"delivered": attempt["error"] is None, **attempt}
