"""The Python client (clients/python) and the `claw` CLI against the real gateway, a real
worker and a local OpenAI stand-in: every call, typed errors, streams that resume by
themselves, webhook verification."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from claw_client import (
    AsyncClawClient,
    BadRequest,
    ClawClient,
    ClawConnectionError,
    Conflict,
    NotFound,
    Unauthorized,
    WebhookVerificationError,
    verify_webhook,
)
from standardwebhooks.webhooks import Webhook

from tests.support.api import ADMIN, ALICE, API_KEYS, BOB
from tests.support.fake_openai import FakeOpenAI

QUEUE = "tests_client"


@pytest.fixture(scope="module")
def client_redis_url(redis_url: str) -> str:
    """A database of its own: the suite's shared worker never takes our AI tasks."""
    return redis_url.rsplit("/", 1)[0] + "/4"


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    server.slow_words = 30
    server.slow_delay = 0.02
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client_worker(client_redis_url, log_dir, fake_openai) -> Iterator[Any]:
    from tests.support.processes import start_worker

    env = fake_openai.env(AI_RATE_LIMIT="1000/s")
    worker = start_worker(
        client_redis_url, log_dir, name="client", queues=f"{QUEUE},ai_high_priority",
        env=env, concurrency=2,
    )  # fmt: skip
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
def gateway(client_redis_url, log_dir, client_worker, fake_openai) -> Iterator[Any]:
    from tests.support.processes import start_gateway

    # A 10-event buffer: a burst makes the gateway end streams with `resume`, which the
    # client must follow by itself.
    env = fake_openai.env(API_KEYS=API_KEYS, SSE_BUFFER="10", SSE_HEARTBEAT="1")
    g = start_gateway(client_redis_url, log_dir, env=env)
    yield g
    g.stop()


@pytest.fixture(scope="module")
def publish(client_redis_url, celery_app):
    connection = celery_app.connection_for_write(client_redis_url)

    def send(name: str, args: list[Any]) -> Any:
        return celery_app.send_task(name, args=args, queue=QUEUE, connection=connection)

    yield send
    connection.release()


@pytest.fixture
def alice(gateway) -> Iterator[ClawClient]:
    with ClawClient(gateway.base_url, ALICE) as client:
        yield client


@pytest.fixture
async def async_alice(gateway) -> AsyncIterator[AsyncClawClient]:
    async with AsyncClawClient(gateway.base_url, ALICE) as client:
        yield client


def test_submit_status_list_wait_cancel_retry_and_typed_errors(alice, gateway) -> None:
    submitted = alice.generate(f"c-{uuid.uuid4().hex[:6]}", "Hello there")
    assert submitted["status"] == "PENDING"
    done = alice.wait(submitted["task_id"], timeout=20)
    assert done["status"] == "SUCCESS" and done["result"]["response"].startswith("Echo")
    assert alice.status(submitted["task_id"]) == done
    page = alice.list(limit=1)
    assert page["tasks"][0]["task_id"] == submitted["task_id"]
    every = [t["task_id"] for t in alice.iter_tasks(limit=1, name="generate_ai_response")]
    assert submitted["task_id"] in every and len(every) == len(set(every))
    assert alice.stats()["total_tasks"] >= 1
    # Errors are typed and carry the API's body.
    with pytest.raises(Conflict) as conflict:
        alice.retry(submitted["task_id"])  # a SUCCESS is not retried
    assert conflict.value.status == 409 and "retried" in conflict.value.message
    with pytest.raises(BadRequest) as bad:
        alice.submit("ai/generate", {"conversation_id": "c", "user_message": "", "priority": 42})
    assert "priority" in bad.value.details
    with ClawClient(gateway.base_url, BOB) as bob, pytest.raises(NotFound):
        bob.status(submitted["task_id"])  # another owner's
    with ClawClient(gateway.base_url, "") as anonymous, pytest.raises(Unauthorized):
        anonymous.list()
    with ClawClient("http://127.0.0.1:9", ALICE) as nowhere, pytest.raises(ClawConnectionError):
        nowhere.stats()
    # A delayed task is cancelled, then retried.
    later = alice.submit("ai/generate", {"conversation_id": "c2", "user_message": "x",
                                         "countdown": 600})  # fmt: skip
    assert alice.cancel(later["task_id"])["status"] == "REVOKED"
    again = alice.retry(later["task_id"])
    assert again["retried_from"] == later["task_id"]
    alice.cancel(again["task_id"])


def test_a_stream_resumes_by_itself_and_yields_each_event_once(gateway, publish) -> None:
    """300 chunks in a burst overflow the gateway's 10-event buffer: the stream is ended
    with `resume` several times; the client reconnects each time and loses nothing."""
    task = publish("tests.stream", [300])
    with ClawClient(gateway.base_url, ADMIN) as admin:
        events = list(admin.stream(task.id))
    ids = [e.id for e in events]
    assert ids == list(range(1, len(events) + 1))
    assert [e.data["index"] for e in events if e.event == "chunk"] == list(range(300))
    assert events[-1].final and events[-1].data["task"]["result"] == {"chunks": 300}
    # From a position: only what follows; past the end: nothing (204).
    with ClawClient(gateway.base_url, ADMIN) as admin:
        assert [e.id for e in admin.stream(task.id, starting_after=len(events) - 2)] == ids[-2:]
        assert list(admin.stream(task.id, starting_after=len(events))) == []


async def test_the_async_client_streams_an_ai_reply_submitted_with_stream_true(
    async_alice,
) -> None:
    events = [e async for e in async_alice.generate_stream("c-async", "Tell me [slow]")]
    assert events[0].event == "submitted" and events[0].id is None
    text = "".join(e.data["text"] for e in events if e.event == "chunk")
    final = events[-1].data["task"]
    assert final["status"] == "SUCCESS" and text == final["result"]["response"]
    assert [e.id for e in events[1:]] == list(range(1, len(events)))
    status = await async_alice.status(final["task_id"])
    assert status["status"] == "SUCCESS"
    tasks = [t async for t in async_alice.iter_tasks(limit=2)]
    assert final["task_id"] in {t["task_id"] for t in tasks}
    with pytest.raises(NotFound):
        await async_alice.status(str(uuid.uuid4()))


def test_webhook_verification_follows_the_standard() -> None:
    from workers.notify.task_webhooks import new_secret, signed_headers

    secret, body = new_secret(), b'{"type":"task.completed","data":{"status":"SUCCESS"}}'
    headers = signed_headers([secret], "msg_1", body)
    assert verify_webhook(secret, headers, body)["type"] == "task.completed"
    # The reference library agrees, both ways.
    library_headers = {"webhook-id": "msg_2", "webhook-timestamp": str(int(time.time()))}
    library_headers["webhook-signature"] = Webhook(secret).sign("msg_2", _utc_now(), body.decode())
    assert verify_webhook(secret, library_headers, body)["data"]["status"] == "SUCCESS"
    assert Webhook(secret).verify(body, headers)["type"] == "task.completed"
    for bad_secret, bad_headers, bad_body in (
        (new_secret(), headers, body),  # another secret
        (secret, headers, body + b" "),  # a changed body
        (secret, {**headers, "webhook-timestamp": str(int(time.time()) - 3600)}, body),
        (secret, {k: v for k, v in headers.items() if k != "webhook-id"}, body),
    ):
        with pytest.raises(WebhookVerificationError):
            verify_webhook(bad_secret, bad_headers, bad_body)


def _utc_now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def claw(gateway: Any, *args: str, key: str = ALICE) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CLAW_URL": gateway.base_url, "CLAW_API_KEY": key}
    return subprocess.run(
        [sys.executable, "-m", "claw_client.cli", *args], env=env, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip


def test_the_cli_asks_lists_watches_and_reports_errors(gateway) -> None:
    asked = claw(gateway, "ai", "Tell me [slow] please")
    assert asked.returncode == 0, asked.stderr
    assert asked.stdout.startswith("Echo: Tell me [slow] please") and "[SUCCESS]" in asked.stderr
    task_id = asked.stderr.split("[task ", 1)[1].split("]", 1)[0]
    listed = claw(gateway, "tasks", "list", "--json", "--limit", "5")
    assert listed.returncode == 0 and task_id in listed.stdout
    table = claw(gateway, "tasks", "list", "--status", "SUCCESS")
    assert table.stdout.splitlines()[0].split() == ["task_id", "status", "name", "queue",
                                                    "submitted_at", "runtime"]  # fmt: skip
    watched = claw(gateway, "tasks", "watch", task_id)
    assert watched.returncode == 0 and watched.stdout.startswith("Echo: Tell me")
    missing = claw(gateway, "tasks", "status", str(uuid.uuid4()))
    assert missing.returncode == 2 and "error 404" in missing.stderr
    foreign = claw(gateway, "tasks", "status", task_id, key=BOB)
    assert foreign.returncode == 2
