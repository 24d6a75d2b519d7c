"""`verify_webhook` (Standard Webhooks): it accepts what the specification's algorithm,
the reference library and the platform's own deliveries sign, and refuses a changed body,
a stale or future timestamp, another secret, a missing header, another scheme. The
webhook calls of both clients: the secret and its rotation, the delivery log, and a
redelivery (the same event again, under its webhook-id)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from claw_client import ClawClient, Conflict, NotFound, WebhookVerificationError, verify_webhook
from standardwebhooks.webhooks import Webhook

from tests.support.api import BOB
from tests.support.waiting import async_wait_until, wait_until
from tests.support.webhook_server import TaskWebhookReceiver

BODY = json.dumps(
    {"type": "task.completed", "timestamp": "2026-01-01T00:00:00Z", "data": {"status": "SUCCESS"}}
).encode()


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def spec_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The Standard Webhooks algorithm, written here from the specification: HMAC-SHA256,
    keyed with the base64-decoded part of the secret after `whsec_`, over
    `{id}.{timestamp}.{body}`, base64-encoded, as `v1,<signature>`."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def signed(secret: str, body: bytes = BODY, *, at: float | None = None) -> dict[str, str]:
    timestamp = int(time.time() if at is None else at)
    return {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": spec_signature(secret, "msg_1", timestamp, body),
    }


def test_a_delivery_signed_per_the_specification_verifies() -> None:
    secret = new_secret()
    headers = signed(secret)
    assert verify_webhook(secret, headers, BODY) == json.loads(BODY)
    assert verify_webhook(secret, headers, BODY.decode())["type"] == "task.completed"
    # Header names in any case (as HTTP frameworks hand them over).
    assert verify_webhook(secret, {k.title(): v for k, v in headers.items()}, BODY)
    # A rotated secret: the sender signs with the old and the new one; either verifies.
    old = new_secret()
    both = {**headers, "webhook-signature": f"{signed(old)['webhook-signature']} "
                                           f"{headers['webhook-signature']}"}  # fmt: skip
    assert verify_webhook(secret, both, BODY) and verify_webhook(old, both, BODY)
    # Within the tolerance either way (clock skew).
    assert verify_webhook(secret, signed(secret, at=time.time() - 200), BODY)
    assert verify_webhook(secret, signed(secret, at=time.time() + 200), BODY)
    assert verify_webhook(secret, signed(secret, at=time.time() - 500), BODY, tolerance=600)


@pytest.mark.parametrize(
    "change",
    [
        "another secret", "a changed body", "an old timestamp", "a future timestamp",
        "a timestamp changed after signing", "no webhook-id", "no signature", "scheme v2",
        "a secret that is not base64", "a body that is not a JSON object",
    ],
)  # fmt: skip
def test_a_delivery_that_does_not_verify_is_refused(change: str) -> None:
    secret, body = new_secret(), BODY
    headers = signed(secret)
    if change == "another secret":
        secret = new_secret()
    elif change == "a changed body":
        body = BODY.replace(b"SUCCESS", b"FAILURE")
    elif change == "an old timestamp":
        headers = signed(secret, at=time.time() - 301)
    elif change == "a future timestamp":
        headers = signed(secret, at=time.time() + 301)
    elif change == "a timestamp changed after signing":
        headers["webhook-timestamp"] = str(int(headers["webhook-timestamp"]) + 1)
    elif change == "no webhook-id":
        del headers["webhook-id"]
    elif change == "no signature":
        del headers["webhook-signature"]
    elif change == "scheme v2":
        headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v2,")
    elif change == "a secret that is not base64":
        secret = "whsec_not base64!"
    elif change == "a body that is not a JSON object":
        body = b"[1, 2]"
        headers = signed(secret, body)
    with pytest.raises(WebhookVerificationError):
        verify_webhook(secret, headers, body)


def test_the_reference_library_and_the_client_agree_both_ways() -> None:
    secret = new_secret()
    now = datetime.now(UTC)
    library = {"webhook-id": "msg_2", "webhook-timestamp": str(int(now.timestamp()))}
    library["webhook-signature"] = Webhook(secret).sign("msg_2", now, BODY.decode())
    assert verify_webhook(secret, library, BODY)["data"] == {"status": "SUCCESS"}
    assert Webhook(secret).verify(BODY, signed(secret))["type"] == "task.completed"


def delivered(receiver: TaskWebhookReceiver, name: str) -> dict[str, Any]:
    """The one delivery to /ok/<name>: its headers (lower-cased) and raw body."""
    [delivery] = wait_until(lambda: receiver.received[name], 20, what=f"a delivery to {name}")
    return {"headers": {k.lower(): v for k, v in delivery["headers"].items()}, **delivery}


def test_a_real_delivery_verifies_with_the_secret_the_api_gives(alice, receiver) -> None:
    webhook = {"url": f"{receiver.base_url}/ok/client", "events": ["completed"]}
    task = alice.generate("c-hook", "hello hook", webhook=webhook)
    done = alice.wait(task["task_id"], timeout=20)
    delivery = delivered(receiver, "client")
    secret = alice.webhook_secret()["secret"]
    payload = verify_webhook(secret, delivery["headers"], delivery["body"])
    assert payload["type"] == "task.completed" and payload["data"]["task_id"] == task["task_id"]
    assert payload["data"]["status"] == "SUCCESS"
    assert payload["data"]["result"] == done["result"]
    with pytest.raises(WebhookVerificationError):
        verify_webhook(secret, delivery["headers"], delivery["body"] + b" ")
    log = wait_until(
        lambda: alice.webhook_deliveries(task["task_id"])["deliveries"], 10, what="the log"
    )
    assert log[0]["status_code"] == 200
    assert log[0]["webhook_id"] == delivery["headers"]["webhook-id"]


def test_after_a_rotation_deliveries_verify_with_the_old_and_the_new_secret(
    alice, receiver
) -> None:
    old = alice.webhook_secret()["secret"]
    rotated = alice.rotate_webhook_secret()
    assert rotated["secret"] != old and rotated["previous_valid_until"]
    assert alice.webhook_secret()["secret"] == rotated["secret"]
    webhook = {"url": f"{receiver.base_url}/ok/rotated", "events": ["completed"]}
    task = alice.generate("c-hook", "after rotation", webhook=webhook)
    delivery = delivered(receiver, "rotated")
    for secret in (old, rotated["secret"]):
        payload = verify_webhook(secret, delivery["headers"], delivery["body"])
        assert payload["data"]["task_id"] == task["task_id"]
    with pytest.raises(WebhookVerificationError):
        verify_webhook(new_secret(), delivery["headers"], delivery["body"])


def test_redeliver_webhook_sends_a_delivery_again_under_its_webhook_id(
    alice, receiver, gateway
) -> None:
    webhook = {"url": f"{receiver.base_url}/ok/redelivered", "events": ["completed"]}
    task = alice.notify("in_app", "alice", "deliver twice", webhook=webhook)
    first = delivered(receiver, "redelivered")
    webhook_id = first["headers"]["webhook-id"]
    log = wait_until(
        lambda: alice.webhook_deliveries(task["task_id"])["deliveries"], 10, what="the log"
    )
    assert [(d["webhook_id"], d["redelivery"]) for d in log] == [(webhook_id, False)]
    again = alice.redeliver_webhook(task["task_id"])  # the last delivery
    assert again["task_id"] == task["task_id"] and again["webhook_id"] == webhook_id
    assert again["event"] == "completed" and again["delivery_task_id"]
    chosen = alice.redeliver_webhook(task["task_id"], webhook_id)
    assert chosen["webhook_id"] == webhook_id
    assert chosen["delivery_task_id"] != again["delivery_task_id"]
    resent = wait_until(
        lambda: receiver.received["redelivered"][1:] if len(receiver.received["redelivered"]) == 3
        else None, 10, what="two redeliveries",
    )  # fmt: skip
    secret = alice.webhook_secret()["secret"]
    for delivery in resent:  # the same event, signed again, under the same id
        headers = {k.lower(): v for k, v in delivery["headers"].items()}
        assert headers["webhook-id"] == webhook_id
        payload = verify_webhook(secret, headers, delivery["body"])
        assert payload["data"]["task_id"] == task["task_id"]
    log = wait_until(
        lambda: (d := alice.webhook_deliveries(task["task_id"])["deliveries"])[2:] and d,
        10, what="the redeliveries in the log",
    )  # fmt: skip
    assert [d["redelivery"] for d in log] == [False, True, True]
    assert {d["status_code"] for d in log} == {200}

    with pytest.raises(NotFound) as unknown:
        alice.redeliver_webhook(task["task_id"], "msg_nothing")
    assert unknown.value.body == {"error": "no such delivery of this task"}
    plain = alice.notify("in_app", "alice", "no hook", countdown=600)
    with pytest.raises(Conflict) as no_hook:
        alice.redeliver_webhook(plain["task_id"])
    assert no_hook.value.status == 409 and no_hook.value.message == "the task has no webhook"
    alice.cancel(plain["task_id"])
    with ClawClient(gateway.base_url, BOB) as bob, pytest.raises(NotFound):
        bob.redeliver_webhook(task["task_id"])


async def test_the_async_client_has_the_same_webhook_calls(async_alice, receiver) -> None:
    old = (await async_alice.webhook_secret())["secret"]
    rotated = await async_alice.rotate_webhook_secret()
    assert rotated["secret"] != old and rotated["previous_valid_until"]
    assert (await async_alice.webhook_secret())["secret"] == rotated["secret"]
    webhook = {"url": f"{receiver.base_url}/ok/async", "events": ["completed"]}
    task = await async_alice.notify("in_app", "alice", "async hook", webhook=webhook)

    async def logged() -> list[dict[str, Any]]:
        return (await async_alice.webhook_deliveries(task["task_id"]))["deliveries"]

    [attempt] = await async_wait_until(logged, 10, what="the delivery in the log")
    first = delivered(receiver, "async")
    assert attempt["webhook_id"] == first["headers"]["webhook-id"]
    again = await async_alice.redeliver_webhook(task["task_id"], attempt["webhook_id"])
    assert again["webhook_id"] == attempt["webhook_id"]

    async def both() -> list[dict[str, Any]]:
        return [] if len(log := await logged()) < 2 else log

    assert [d["redelivery"] for d in await async_wait_until(both, 10)] == [False, True]
    second = receiver.received["async"][1]
    for secret in (old, rotated["secret"]):  # signed with both during the rotation
        payload = verify_webhook(secret, second["headers"], second["body"])
        assert payload["data"]["task_id"] == task["task_id"]
    with pytest.raises(NotFound):
        await async_alice.webhook_deliveries(str(uuid.uuid4()))
