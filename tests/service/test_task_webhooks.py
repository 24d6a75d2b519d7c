"""Task webhooks against the real gateway, a real worker and a local receiver: Standard
Webhooks signatures (checked with the spec's algorithm and with the `standardwebhooks`
library), retries after a 500 with the same webhook-id, the SSRF policy, the delivery log,
redelivery, secret rotation and isolation."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from claw_client import AsyncClawClient
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.support.api import ALICE, API_KEYS, BOB, Api
from tests.support.processes import database_url
from tests.support.waiting import async_wait_until
from tests.support.webhook_server import TaskWebhookReceiver

API = "/api/v1/tasks"
ALLOWED = "127.0.0.1/32"  # the receiver's; every other private address stays forbidden


@pytest.fixture(scope="module")
def hooks_redis_url(redis_url: str) -> str:
    """A database of its own: the suite's shared worker never takes our tasks."""
    return database_url(redis_url, 5)


@pytest.fixture(scope="module")
def hooks_worker(hooks_redis_url, log_dir) -> Iterator[Any]:
    from tests.support.processes import start_worker

    env = {"WEBHOOK_ALLOWED_NETWORKS": ALLOWED, "TASK_WEBHOOK_BACKOFF_BASE": "0.2",
           "TASK_WEBHOOK_RETRY_FOR": "3", "AI_RATE_LIMIT": "1000/s"}  # fmt: skip
    worker = start_worker(
        hooks_redis_url, log_dir, name="hooks", concurrency=2, env=env,
        queues="notification_default,ai_high_priority",
    )  # fmt: skip
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
def hooks_gateway(hooks_redis_url, log_dir, hooks_worker) -> Iterator[Any]:
    from tests.support.processes import start_gateway

    env = {"API_KEYS": API_KEYS, "WEBHOOK_ALLOWED_NETWORKS": ALLOWED}
    gateway = start_gateway(hooks_redis_url, log_dir, env=env)
    yield gateway
    gateway.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Client(Api):
    """The tests' API client (through the client package), answering (status, body)."""

    async def call(  # type: ignore[override]
        self, method: str, path: str, body: Any = None
    ) -> tuple[int, Any]:
        return await super().call(method, path, json=body)


@pytest.fixture
def alice(http, hooks_gateway) -> Client:
    return Client(http, hooks_gateway.base_url, ALICE)


@pytest.fixture
def bob(http, hooks_gateway) -> Client:
    return Client(http, hooks_gateway.base_url, BOB)


def spec_signature(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    """The Standard Webhooks algorithm, written from the specification."""
    key = base64.b64decode(secret.split("_", 1)[1])
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


async def received(receiver: TaskWebhookReceiver, name: str, count: int) -> list[dict]:
    async def enough() -> Any:
        return len(receiver.received[name]) >= count

    await async_wait_until(enough, 20, what=f"{count} deliveries to {name}")
    return receiver.received[name]


async def notify(client: Client, webhook: dict[str, Any]) -> str:
    body = {"channel": "in_app", "recipient": "alice", "message": "hi", "webhook": webhook}
    status, answer = await client.call("POST", f"{API}/notifications/send", body)
    assert status == 202, answer
    return answer["task_id"]


async def test_a_completed_task_is_posted_signed_per_standard_webhooks(
    alice, receiver, hooks_gateway
) -> None:
    task_id = await notify(alice, {"url": f"{receiver.base_url}/ok/done"})
    [delivery] = await received(receiver, "done", 1)
    headers, body = delivery["headers"], delivery["body"]
    status, secret = await alice.call("GET", "/api/v1/webhooks/secret")
    assert status == 200 and secret["secret"].startswith("whsec_")
    # The spec's algorithm, and an existing verification library, both accept it.
    expected = spec_signature(
        secret["secret"], headers["webhook-id"], headers["webhook-timestamp"], body
    )
    assert expected in headers["webhook-signature"].split(" ")
    payload = Webhook(secret["secret"]).verify(body, headers)
    assert payload["type"] == "task.completed"
    # The data is the task's status body, as the API answers it.
    _, status_body = await alice.call("GET", f"{API}/status/{task_id}")
    assert payload["data"] == {k: v for k, v in status_body.items() if k in payload["data"]}
    assert payload["data"]["status"] == "SUCCESS" and payload["data"]["task_id"] == task_id
    assert headers["webhook-id"].startswith(f"msg_{task_id}_")
    with pytest.raises(WebhookVerificationError):
        Webhook(secret["secret"]).verify(body + b" ", headers)


async def test_a_failed_delivery_is_retried_with_the_same_id_and_every_attempt_logged(
    alice, receiver
) -> None:
    task_id = await notify(alice, {"url": f"{receiver.base_url}/fail/flaky?times=2"})
    deliveries = await received(receiver, "flaky", 3)
    assert len({d["headers"]["webhook-id"] for d in deliveries}) == 1  # at least once, one id

    async def logged() -> Any:
        _, log = await alice.call("GET", f"{API}/{task_id}/webhooks")
        return log if len(log["deliveries"]) == 3 else None

    log = await async_wait_until(logged, 10, what="three attempts in the log")
    attempts = log["deliveries"]
    assert [a["status_code"] for a in attempts] == [500, 500, 200]
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    assert attempts[0]["error"] == "answered 500" and attempts[-1]["error"] is None
    assert all(a["latency_ms"] >= 0 and a["event"] == "completed" for a in attempts)
    assert log["webhook"] == {
        "url": f"{receiver.base_url}/fail/flaky?times=2",
        "events": ["completed"],
    }

    # Redelivery: the same event and id, once more, logged as a redelivery.
    status, answer = await alice.call("POST", f"{API}/{task_id}/webhooks/redeliver", {})
    assert status == 202 and answer["webhook_id"] == attempts[0]["webhook_id"]
    again = await received(receiver, "flaky", 4)
    assert again[-1]["headers"]["webhook-id"] == attempts[0]["webhook_id"]


async def test_a_forbidden_address_is_refused_at_submission_and_at_delivery(
    alice, receiver
) -> None:
    body = {"channel": "in_app", "recipient": "alice", "message": "hi",
            "webhook": {"url": "http://10.0.0.1/hook"}}  # fmt: skip
    status, answer = await alice.call("POST", f"{API}/notifications/send", body)
    assert status == 400 and "url" in answer["details"]["webhook"]
    body["webhook"] = {"url": "ftp://example.com/x", "events": ["finished"]}
    status, answer = await alice.call("POST", f"{API}/notifications/send", body)
    assert status == 400 and set(answer["details"]["webhook"]) == {"url", "events"}
    # A redirect to a forbidden address: refused when followed, never retried.
    forbidden = f"{receiver.base_url}/redirect?to=http://169.254.169.254/latest"
    task_id = await notify(alice, {"url": forbidden})

    async def logged() -> Any:
        _, log = await alice.call("GET", f"{API}/{task_id}/webhooks")
        return log["deliveries"]

    [attempt] = await async_wait_until(logged, 10, what="the refused attempt")
    assert attempt["error"].startswith("refused") and attempt["status_code"] is None


async def test_started_output_and_completed_of_an_ai_reply(alice, receiver) -> None:
    webhook = {"url": f"{receiver.base_url}/ok/ai", "events": ["completed", "started", "output"]}
    body = {"conversation_id": "c-hook", "user_message": "hello there", "webhook": webhook}
    status, answer = await alice.call("POST", f"{API}/ai/generate", body)
    assert status == 202
    task_id = answer["task_id"]

    async def completed() -> Any:
        got = [json.loads(d["body"]) for d in receiver.received["ai"]]
        return got if any(p["type"] == "task.completed" for p in got) else None

    payloads = await async_wait_until(completed, 20, what="the completed delivery")
    types = {p["type"] for p in payloads}
    assert types == {"task.started", "task.output", "task.completed"}
    output = [p["data"] for p in payloads if p["type"] == "task.output"]
    assert all(o["task_id"] == task_id and "owner" not in o for o in output)
    assert any(o["type"] == "chunk" for o in output)


async def test_the_secret_rotates_with_a_grace_period_and_is_the_owners_alone(
    alice, bob, receiver
) -> None:
    _, before = await alice.call("GET", "/api/v1/webhooks/secret")
    _, bobs = await bob.call("GET", "/api/v1/webhooks/secret")
    assert bobs["secret"] != before["secret"]
    status, after = await alice.call("POST", "/api/v1/webhooks/secret/rotate")
    assert status == 200 and after["secret"] != before["secret"]
    assert after["previous_valid_until"] is not None
    task_id = await notify(alice, {"url": f"{receiver.base_url}/ok/rotated"})
    [delivery] = await received(receiver, "rotated", 1)
    # Signed with both: receivers on the old secret and on the new one accept it.
    for secret in (before["secret"], after["secret"]):
        Webhook(secret).verify(delivery["body"], delivery["headers"])
    with pytest.raises(WebhookVerificationError):
        Webhook(bobs["secret"]).verify(delivery["body"], delivery["headers"])
    # Another owner sees neither the task's log nor may redeliver it.
    status, _ = await bob.call("GET", f"{API}/{task_id}/webhooks")
    assert status == 404
    status, _ = await bob.call("POST", f"{API}/{task_id}/webhooks/redeliver", {})
    assert status == 404


async def test_a_redelivery_answers_202_naming_the_delivery_log_to_poll(alice, receiver) -> None:
    """`Location` of a redelivery's 202 is the task's delivery log, where the new attempt
    appears (the task's status does not change with it)."""
    name = f"again-{uuid.uuid4().hex[:8]}"
    task_id = await notify(alice, {"url": f"{receiver.base_url}/ok/{name}"})

    async def attempts(log_url: str, count: int) -> Any:
        _, log = await alice.call("GET", log_url)
        return log if len(log["deliveries"]) >= count else None

    await async_wait_until(lambda: attempts(f"{API}/{task_id}/webhooks", 1), 20,
                           what="the first delivery logged")  # fmt: skip
    async with AsyncClawClient(alice.base_url, ALICE) as claw:
        answer = await claw.request("POST", f"{API}/{task_id}/webhooks/redeliver", json={})
    assert answer.status_code == 202, answer.text
    assert answer.headers["Location"] == f"{API}/{task_id}/webhooks"
    log = await async_wait_until(lambda: attempts(answer.headers["Location"], 2), 20,
                                 what="the redelivery logged")  # fmt: skip
    assert log["deliveries"][-1]["redelivery"] is True
    assert log["deliveries"][-1]["webhook_id"] == answer.json()["webhook_id"]


async def test_a_receiver_that_keeps_failing_is_retried_with_growing_gaps_then_given_up_on(
    alice, receiver
) -> None:
    """TASK_WEBHOOK_RETRY_FOR=3, TASK_WEBHOOK_BACKOFF_BASE=0.2: attempts 0.2, 0.4, 0.8 s
    apart (no attempt sooner than its backoff), each naming the next, all with the one
    webhook-id; the attempt whose next would fall past 3 s after the first is the last,
    marked `gave_up`, and the receiver got no more requests than the log shows."""
    task_id = await notify(alice, {"url": f"{receiver.base_url}/fail/never?times=1000000"})

    async def gave_up() -> Any:
        _, log = await alice.call("GET", f"{API}/{task_id}/webhooks")
        last = log["deliveries"][-1] if log["deliveries"] else {}
        return log["deliveries"] if last.get("gave_up") else None

    attempts = await async_wait_until(gave_up, 30, what="the delivery given up")
    at = [dt.datetime.fromisoformat(a["at"]) for a in attempts]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(at)]
    assert len(attempts) >= 3, attempts
    assert [a["attempt"] for a in attempts] == list(range(1, len(attempts) + 1))
    assert all(a["status_code"] == 500 and a["error"] == "answered 500" for a in attempts)
    assert len({a["webhook_id"] for a in attempts}) == 1
    assert [d["headers"]["webhook-id"] for d in receiver.received["never"]] == [
        a["webhook_id"] for a in attempts
    ]  # every request the receiver got is logged: nothing was sent past the last
    # Backoff: each gap at least the one before it doubled (0.2 * 2**n, and never sooner).
    assert all(gap >= 0.2 * 2**n for n, gap in enumerate(gaps)), gaps
    assert gaps == sorted(gaps), gaps
    # Every retry was due within TASK_WEBHOOK_RETRY_FOR of the first attempt; the last
    # names none.
    *retried, last = attempts
    due = [dt.datetime.fromisoformat(a["next_attempt_at"]) for a in retried]
    assert all((d - at[0]).total_seconds() <= 3 for d in due), due
    assert last["gave_up"] is True and "next_attempt_at" not in last
    assert not any(a.get("gave_up") for a in retried)
