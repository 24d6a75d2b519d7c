"""What the sync and async clients share: the API's calls as data (`Request` values built
here once), and answers turned into values or typed errors. The two clients only send."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from claw_client.errors import ClawConnectionError, error_for

API = "/api/v1/tasks"
WEBHOOKS = "/api/v1/webhooks"
SCHEDULES = "/api/v1/schedules"
BATCHES = "/api/v1/batches"
DEFAULT_URL = "http://127.0.0.1:8000"
SUBMIT_KINDS = (
    "ai/generate", "knowledge/vectorize", "knowledge/update", "knowledge/delete",
    "notifications/send",
)  # fmt: skip
# A stream's read timeout: well above the gateway's heartbeat (SSE_HEARTBEAT, 15 s), so a
# read that times out means a dead connection.
STREAM_READ_TIMEOUT = 60.0
CONNECT_TIMEOUT = 10.0
# `ClawClient.wait` reads its stream in slices of this many seconds at most, so that a
# blocking read cannot outlast the wait's deadline by more.
WAIT_SLICE = 5.0
# Polling `status` (when no stream can be had): the first pause, growing to the last.
POLL_FIRST = 0.2
POLL_MAX = 2.0


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    # A body that is not JSON (a batch's JSON Lines).
    content: bytes | None = None


def settings(base_url: str | None, api_key: str | None) -> tuple[str, dict[str, str]]:
    """The gateway's URL and the auth header: the arguments, else CLAW_URL, CLAW_API_KEY."""
    url = (base_url or os.environ.get("CLAW_URL") or DEFAULT_URL).rstrip("/")
    key = api_key if api_key is not None else os.environ.get("CLAW_API_KEY")
    return url, ({"Authorization": f"Bearer {key}"} if key else {})


def _task(path: str, task_id: str) -> str:
    return path.format(API=API, id=quote(task_id, safe=""))


# --- the calls --------------------------------------------------------------------------


def submit(
    kind: str, body: dict[str, Any], idempotency_key: str | None = None,
    wait: float | None = None, stream: bool = False,
) -> Request:  # fmt: skip
    _check_kind(kind)
    params: dict[str, Any] = {}
    if wait is not None:
        params["wait"] = wait
    if stream:
        params["stream"] = "true"
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    return Request("POST", f"{API}/{kind}", params, body, headers)


def generate(
    conversation_id: str, user_message: str, options: dict[str, Any], stream: bool = False
) -> Request:
    body = {"conversation_id": conversation_id, "user_message": user_message, **options}
    return submit("ai/generate", body, stream=stream)


def vectorize(kb_id: str, document_id: str, text: str, options: dict[str, Any]) -> Request:
    body = {"kb_id": kb_id, "document_id": document_id, "text": text, **options}
    return submit("knowledge/vectorize", body)


def notify(channel: str, recipient: str, message: str, options: dict[str, Any]) -> Request:
    body = {"channel": channel, "recipient": recipient, "message": message, **options}
    return submit("notifications/send", body)


def status(task_id: str) -> Request:
    return Request("GET", _task("{API}/status/{id}", task_id))


def listing(
    status: str | None = None, queue: str | None = None, name: str | None = None,
    owner: str | None = None, limit: int | None = None, cursor: str | int | None = None,
    tag: str | None = None, metadata: str | None = None,
) -> Request:  # fmt: skip
    filters = {"status": status, "queue": queue, "name": name, "owner": owner,
               "limit": limit, "cursor": cursor, "tag": tag, "metadata": metadata}  # fmt: skip
    return Request("GET", f"{API}/list", {k: v for k, v in filters.items() if v is not None})


def cancel(task_id: str, terminate: bool) -> Request:
    params = {"terminate": "true"} if terminate else {}
    return Request("POST", _task("{API}/cancel/{id}", task_id), params)


def retry(task_id: str) -> Request:
    return Request("POST", _task("{API}/retry/{id}", task_id))


def stats() -> Request:
    return Request("GET", f"{API}/stats")


def stream(task_id: str, after: int) -> Request:
    headers = {"Last-Event-ID": str(after)} if after else {}
    return Request("GET", _task("{API}/{id}/stream", task_id), headers=headers)


def webhook_secret() -> Request:
    return Request("GET", f"{WEBHOOKS}/secret")


def rotate_webhook_secret() -> Request:
    return Request("POST", f"{WEBHOOKS}/secret/rotate")


def webhook_deliveries(task_id: str) -> Request:
    return Request("GET", _task("{API}/{id}/webhooks", task_id))


def redeliver_webhook(task_id: str, webhook_id: str | None) -> Request:
    body = {"webhook_id": webhook_id} if webhook_id else {}
    return Request("POST", _task("{API}/{id}/webhooks/redeliver", task_id), json=body)


def create_schedule(
    task: str, arguments: dict[str, Any], cron: str | None, interval: float | None,
    timezone: str | None,
) -> Request:  # fmt: skip
    _check_kind(task)
    timing = {"cron": cron, "interval": interval, "timezone": timezone}
    body: dict[str, Any] = {"task": task, "arguments": arguments}
    body.update({k: v for k, v in timing.items() if v is not None})
    return Request("POST", SCHEDULES, json=body)


def schedules() -> Request:
    return Request("GET", SCHEDULES)


def schedule(schedule_id: str) -> Request:
    return Request("GET", f"{SCHEDULES}/{quote(schedule_id, safe='')}")


def delete_schedule(schedule_id: str) -> Request:
    return Request("DELETE", f"{SCHEDULES}/{quote(schedule_id, safe='')}")


def bulk(action: str, filters: dict[str, Any], dry_run: bool) -> Request:
    """Cancel or retry every task `filters` (`list`'s: status, queue, name, tag, metadata,
    owner) selects; `dry_run` counts them."""
    body = {k: v for k, v in filters.items() if v is not None}
    return Request("POST", f"{API}/bulk/{action}", json={**body, "dry_run": dry_run})


def submit_batch(items: Iterable[tuple[str, dict[str, Any]]], webhook: str | None) -> Request:
    """A batch: (kind, body) submissions as JSON Lines, in order."""
    lines = []
    for kind, body in items:
        _check_kind(kind)
        lines.append(json.dumps({"task": kind, "body": body}))
    return Request(
        "POST", BATCHES, {"webhook": webhook} if webhook else {},
        headers={"Content-Type": "application/x-ndjson"}, content="\n".join(lines).encode(),
    )  # fmt: skip


def batch(
    batch_id: str, status: str | None, limit: int | None, cursor: str | int | None
) -> Request:
    params = {"status": status, "limit": limit, "cursor": cursor}
    return Request("GET", f"{BATCHES}/{quote(batch_id, safe='')}",
                   {k: v for k, v in params.items() if v is not None})  # fmt: skip


def cancel_batch(batch_id: str) -> Request:
    return Request("POST", f"{BATCHES}/{quote(batch_id, safe='')}/cancel")


# --- answers ----------------------------------------------------------------------------


def body_of(response: httpx.Response) -> Any:
    """The answer's JSON; a typed ClawError for an error status."""
    try:
        body = response.json() if response.content else None
    except ValueError:
        body = response.text
    if response.status_code >= 400:
        raise error_for(response.status_code, body, response.headers.get("Retry-After"))
    return body


def stream_timeout(deadline: float | None) -> httpx.Timeout:
    """A stream's timeouts; with a deadline (time.monotonic()), no read outlasts it by more
    than WAIT_SLICE."""
    if deadline is None:
        return httpx.Timeout(CONNECT_TIMEOUT, read=STREAM_READ_TIMEOUT)
    left = max(deadline - time.monotonic(), 0.01)
    return httpx.Timeout(min(CONNECT_TIMEOUT, left), read=min(WAIT_SLICE, left))


def expired(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def still_running(task_id: str, timeout: float) -> TimeoutError:
    return TimeoutError(f"task {task_id} has not finished after {timeout:g} s")


def unreachable(base_url: str, exc: Exception) -> ClawConnectionError:
    return ClawConnectionError(f"{base_url}: {str(exc) or type(exc).__name__}")


def _check_kind(kind: str) -> None:
    if kind not in SUBMIT_KINDS:
        raise ValueError(f"unknown submission {kind!r}; one of {', '.join(SUBMIT_KINDS)}")
