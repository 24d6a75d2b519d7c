"""Task webhooks: a submission's `webhook` ({"url", "events"}) is POSTed the task's status
body when those events happen (`started`, `output`, `completed`), signed per the Standard
Webhooks specification (https://www.standardwebhooks.com), so receivers can verify it with
the existing libraries.

How an event becomes a delivery, losing none:
1. The index's Lua scripts (record.lua for states, feed.lua for output) append
   (task_id, event, seq) to the stream `WEBHOOK_STREAM` in the same step as the event
   itself, when the task's record asks for that event.
2. Every worker runs a `Dispatcher` thread reading the stream in one consumer group:
   each entry is published as a `deliver_task_webhook` task, then acknowledged; an entry
   whose reader died before acknowledging it is claimed by another after `CLAIM_IDLE_MS`.
3. `deliver_task_webhook` (workers/tasks/webhooks.py) POSTs, records every attempt in the
   task's delivery log, and retries with backoff for `TASK_WEBHOOK_RETRY_FOR` seconds.
   The `webhook-id` is the event's (task id and number): the same on every retry and
   redelivery, so receivers can drop duplicates (delivery is at least once).

Signing: `webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`
with a per-owner secret `whsec_<base64 key>`, readable and rotatable through the API; for
`ROTATION_GRACE` seconds after a rotation deliveries carry both signatures.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from typing import Any

import redis

from workers.core.keys import (
    WEBHOOK_STREAM,
    events_key,
    webhook_secret_key,
    webhooks_key,
)

logger = logging.getLogger(__name__)

EVENTS = ("started", "output", "completed")
SECRET_PREFIX = "whsec_"  # noqa: S105 (the scheme's prefix, not a secret)
ROTATION_GRACE = 24 * 3600
GROUP = "deliverers"
CLAIM_IDLE_MS = 30_000
READ_BLOCK_MS = 2000
READ_COUNT = 100
LOG_CAP = 1000  # attempts kept per task


# --- secrets ---------------------------------------------------------------------------


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def owner_secret(client: Any, owner: str) -> dict[str, Any]:
    """The owner's signing secret (made on first use) and, within the grace period after
    a rotation, the previous one: {"secret", "previous_valid_until"}."""
    key = webhook_secret_key(owner)
    client.hsetnx(key, "current", new_secret())
    current, previous, until = client.hmget(key, "current", "previous", "previous_until")
    valid = previous is not None and until is not None and float(until) > time.time()
    return {
        "secret": current,
        "previous": previous if valid else None,
        "previous_valid_until": float(until) if valid else None,
    }


def rotate_secret(client: Any, owner: str) -> dict[str, Any]:
    """A new secret for the owner; the one it replaces still signs (beside it) for
    ROTATION_GRACE seconds, so receivers can switch without missing a delivery."""
    key = webhook_secret_key(owner)
    client.hsetnx(key, "current", new_secret())

    def swap(pipe: Any) -> None:  # WATCHed: two rotations at once keep a consistent pair
        previous = pipe.hget(key, "current")
        pipe.multi()
        pipe.hset(
            key,
            mapping={
                "current": new_secret(),
                "previous": previous,
                "previous_until": time.time() + ROTATION_GRACE,
            },
        )

    client.transaction(swap, key)
    return owner_secret(client, owner)


def signing_secrets(client: Any, owner: str) -> list[str]:
    found = owner_secret(client, owner)
    return [s for s in (found["secret"], found["previous"]) if s]


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<signature>` of the Standard Webhooks scheme."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    content = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(
    secrets_: list[str], message_id: str, body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(s, message_id, timestamp, body) for s in secrets_),
    }


# --- what is sent -----------------------------------------------------------------------


def message_id(task_id: str, seq: int) -> str:
    """The event's id: the same on every retry and redelivery of its delivery."""
    return f"msg_{task_id}_{seq}"


def event_type(event: str) -> str:
    return f"task.{event}"


def logged_event(client: Any, task_id: str, seq: int) -> dict[str, Any] | None:
    text = client.lindex(events_key(task_id), seq - 1)
    return json.loads(text) if text else None


def record_attempt(client: Any, task_id: str, attempt: dict[str, Any]) -> None:
    key = webhooks_key(task_id)
    with client.pipeline() as pipe:
        pipe.rpush(key, json.dumps(attempt))
        pipe.ltrim(key, -LOG_CAP, -1)
        pipe.execute()


def delivery_log(client: Any, task_id: str) -> list[dict[str, Any]]:
    return [json.loads(a) for a in client.lrange(webhooks_key(task_id), 0, -1)]


# --- the dispatcher ----------------------------------------------------------------------


class Dispatcher(threading.Thread):
    """Turns WEBHOOK_STREAM entries into delivery tasks (in each worker's main process)."""

    def __init__(self, client: redis.Redis, publish: Any, consumer: str) -> None:
        super().__init__(name="webhook-dispatcher", daemon=True)
        self.client = client
        self.publish = publish  # (task_id, event, seq) -> None
        self.consumer = consumer
        self.stopping = threading.Event()

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self._ensure_group()
                while not self.stopping.is_set():
                    self.step()
            except (redis.exceptions.RedisError, OSError) as exc:
                logger.warning("webhook dispatcher: %s; retrying", exc)
                self.stopping.wait(1.0)
            except Exception:
                logger.exception("webhook dispatcher failed; restarting")
                self.stopping.wait(1.0)

    def _ensure_group(self) -> None:
        try:
            self.client.xgroup_create(WEBHOOK_STREAM, GROUP, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def step(self) -> int:
        """Publish what is due (entries another reader left unacknowledged, then new ones)."""
        claimed: Any = self.client.xautoclaim(
            WEBHOOK_STREAM, GROUP, self.consumer, CLAIM_IDLE_MS, "0-0", count=READ_COUNT
        )
        entries = list(claimed[1])
        if not entries:
            reply: Any = self.client.xreadgroup(
                GROUP, self.consumer, {WEBHOOK_STREAM: ">"}, count=READ_COUNT,
                block=READ_BLOCK_MS,
            )  # fmt: skip
            entries = [e for _, batch in reply or [] for e in batch]
        for entry_id, fields in entries:
            if fields:  # (an entry trimmed away meanwhile comes back empty)
                self.publish(fields["task_id"], fields["event"], int(fields["seq"]))
            self.client.xack(WEBHOOK_STREAM, GROUP, entry_id)
        return len(entries)
