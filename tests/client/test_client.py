"""The client's REST calls (clients/python) against the real gateway and worker: each
method answers the API's body; each error answer raises its typed exception, carrying
the API's status and body."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from claw_client import (
    AsyncClawClient,
    BadRequest,
    ClawClient,
    ClawConnectionError,
    ClawError,
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    ServerError,
    Unauthorized,
)

from tests.support.api import ALICE, BOB


def conversation() -> str:
    return f"c-{uuid.uuid4().hex[:8]}"


def test_submit_answers_202_and_wait_the_final_status_body(alice) -> None:
    submitted = alice.generate(conversation(), "Hello there")
    assert submitted["status"] == "PENDING" and set(submitted) == {"task_id", "status", "message"}
    done = alice.wait(submitted["task_id"], timeout=20)
    assert done["status"] == "SUCCESS" and done["result"]["response"].startswith("Echo")
    assert alice.status(submitted["task_id"]) == done
    # ?wait=: the full status body when the task finishes in time.
    body = {"conversation_id": conversation(), "user_message": "quick"}
    answered = alice.submit("ai/generate", body, wait=20)
    assert answered["status"] == "SUCCESS" and "result" in answered
    # The same Idempotency-Key and body: the same task.
    key = uuid.uuid4().hex
    first = alice.submit("ai/generate", {**body, "countdown": 600}, idempotency_key=key)
    again = alice.submit("ai/generate", {**body, "countdown": 600}, idempotency_key=key)
    assert again["task_id"] == first["task_id"]
    alice.cancel(first["task_id"])
    with pytest.raises(ValueError, match="unknown submission"):
        alice.submit("ai/nothing", body)


def test_the_convenience_submissions_send_their_fields(alice) -> None:
    vectorized = alice.vectorize("kb-client", "doc-1", "Some text.", title="T", countdown=600)
    notified = alice.notify("in_app", "alice", "hi", subject="S", countdown=600)
    for submitted, name in ((vectorized, "vectorize_document"), (notified, "send_notification")):
        status = alice.status(submitted["task_id"])
        assert status["name"] == name and status["status"] == "PENDING"
        assert alice.cancel(submitted["task_id"])["status"] == "REVOKED"
    assert alice.status(vectorized["task_id"])["kwargs"]["title"] == "T"


def test_list_filters_and_iter_tasks_follows_the_cursor_over_every_page(alice) -> None:
    for _ in range(3):
        alice.generate(conversation(), "listed", countdown=600)
    page = alice.list(status="PENDING", name="generate_ai_response", limit=2)
    assert len(page["tasks"]) == 2 and page["next_cursor"]
    assert {t["status"] for t in page["tasks"]} == {"PENDING"}
    following = alice.list(status="PENDING", limit=2, cursor=page["next_cursor"])
    assert not {t["task_id"] for t in following["tasks"]} & {t["task_id"] for t in page["tasks"]}
    # One task a page, following next_cursor: every task of one big page, in its order.
    every = alice.list(status="PENDING", limit=500)["tasks"]
    assert len(every) >= 3
    assert [t["task_id"] for t in alice.iter_tasks(status="PENDING", limit=1)] == [
        t["task_id"] for t in every
    ]
    assert alice.stats()["pending"] >= 3
    for task in every:
        alice.cancel(task["task_id"])
    assert list(alice.iter_tasks(status="PENDING")) == []


def test_cancel_and_retry_answer_the_api_bodies(alice) -> None:
    later = alice.generate(conversation(), "later", countdown=600)
    cancelled = alice.cancel(later["task_id"])
    assert cancelled["task_id"] == later["task_id"] and cancelled["status"] == "REVOKED"
    again = alice.retry(later["task_id"])
    assert again["task_id"] != later["task_id"]
    assert alice.status(again["task_id"])["retried_from"] == later["task_id"]
    with pytest.raises(Conflict) as twice:
        alice.retry(later["task_id"])
    assert twice.value.status == 409 and "already retried" in twice.value.message
    assert alice.wait(again["task_id"], timeout=20)["status"] == "SUCCESS"
    with pytest.raises(Conflict, match="already finished"):
        alice.cancel(again["task_id"])


def test_error_answers_raise_typed_exceptions_with_the_apis_body(alice, gateway) -> None:
    task = alice.generate(conversation(), "mine", countdown=600)
    with ClawClient(gateway.base_url, BOB) as bob, pytest.raises(NotFound) as foreign:
        bob.status(task["task_id"])  # another owner's task is not there for BOB
    assert foreign.value.status == 404 and foreign.value.body == {"error": "no such task"}
    assert foreign.value.message == "no such task"
    with pytest.raises(NotFound):
        alice.cancel(str(uuid.uuid4()))
    for key in ("", "not-a-key-0123456789"):
        with ClawClient(gateway.base_url, key) as stranger, pytest.raises(Unauthorized) as no:
            stranger.list()
        assert no.value.status == 401 and no.value.message
    with pytest.raises(BadRequest) as bad:
        alice.generate("c", "", priority=42)
    assert bad.value.status == 400 and set(bad.value.details) == {"user_message", "priority"}
    assert bad.value.body["details"] == bad.value.details
    with pytest.raises(Forbidden) as forbidden:
        alice.generate("c", "as bob", owner="bob")  # a user key acting for another owner
    assert forbidden.value.status == 403
    key = uuid.uuid4().hex
    alice.submit("ai/generate", {"conversation_id": "c", "user_message": "a", "countdown": 600},
                 idempotency_key=key)  # fmt: skip
    with pytest.raises(BadRequest) as reused:  # the same key, another body: 422
        alice.submit("ai/generate", {"conversation_id": "c", "user_message": "b"},
                     idempotency_key=key)  # fmt: skip
    assert reused.value.status == 422
    with ClawClient("http://127.0.0.1:9", ALICE) as nowhere, pytest.raises(ClawConnectionError):
        nowhere.stats()
    alice.cancel(task["task_id"])
    for pending in alice.iter_tasks(status="PENDING"):
        alice.cancel(pending["task_id"])


def test_statuses_the_gateway_does_not_give_here_map_to_their_exceptions() -> None:
    """429 and 5xx (the gateway answers 503 when Redis is down): a stand-in answers them."""
    answers = {
        "/api/v1/tasks/stats": httpx.Response(
            429, json={"error": "slow down"}, headers={"Retry-After": "3"}
        ),
        "/api/v1/tasks/status/x": httpx.Response(
            503, json={"error": "Redis is unavailable"}, headers={"Retry-After": "2"}
        ),
        "/api/v1/tasks/list": httpx.Response(502, text="<html>bad gateway</html>"),
    }
    transport = httpx.MockTransport(lambda request: answers[request.url.path])
    with ClawClient("http://gateway.test", "k", transport=transport) as claw:
        with pytest.raises(RateLimited) as limited:
            claw.stats()
        assert limited.value.retry_after == 3.0 and limited.value.message == "slow down"
        with pytest.raises(ServerError) as unavailable:
            claw.status("x")
        assert unavailable.value.status == 503 and unavailable.value.retry_after == 2.0
        with pytest.raises(ServerError) as proxy:
            claw.list()
        assert proxy.value.body == "<html>bad gateway</html>"
    assert all(issubclass(e, ClawError) for e in (RateLimited, ServerError, BadRequest))


def test_url_and_key_default_to_the_environment(gateway, monkeypatch) -> None:
    monkeypatch.setenv("CLAW_URL", gateway.base_url)
    monkeypatch.setenv("CLAW_API_KEY", ALICE)
    with ClawClient() as claw:
        assert claw.base_url == gateway.base_url
        assert claw.list(limit=1)["count"] >= 0
    monkeypatch.setenv("CLAW_API_KEY", "")
    with ClawClient() as anonymous, pytest.raises(Unauthorized):
        anonymous.list()


async def test_the_async_client_has_the_same_calls(async_alice, gateway) -> None:
    submitted = await async_alice.generate(conversation(), "async hello")
    done = await async_alice.wait(submitted["task_id"], timeout=20)
    assert done["status"] == "SUCCESS" and done == await async_alice.status(submitted["task_id"])
    later = await async_alice.submit(
        "ai/generate", {"conversation_id": "c", "user_message": "x", "countdown": 600}
    )
    assert (await async_alice.cancel(later["task_id"]))["status"] == "REVOKED"
    again = await async_alice.retry(later["task_id"])
    assert again["task_id"] != later["task_id"]
    await async_alice.wait(again["task_id"], timeout=20)
    page = await async_alice.list(limit=1)
    assert len(page["tasks"]) == 1
    seen = [t["task_id"] async for t in async_alice.iter_tasks(limit=1)]
    assert {submitted["task_id"], later["task_id"], again["task_id"]} <= set(seen)
    assert len(seen) == len(set(seen))
    assert (await async_alice.stats())["total_tasks"] >= 3
    with pytest.raises(NotFound):
        await async_alice.status(str(uuid.uuid4()))
    async with AsyncClawClient(gateway.base_url, "") as anonymous:
        with pytest.raises(Unauthorized):
            await anonymous.stats()


async def test_request_answers_any_call_as_it_came_without_raising(alice, async_alice) -> None:
    missing = f"/api/v1/tasks/status/{uuid.uuid4()}"
    body = {"channel": "in_app", "recipient": "alice", "message": "raw"}
    for answer in (alice.request("GET", missing), await async_alice.request("GET", missing)):
        assert answer.status_code == 404 and answer.json() == {"error": "no such task"}
    sent = alice.request(
        "POST", "/api/v1/tasks/notifications/send", json=body, params={"wait": 10},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )  # fmt: skip
    assert sent.status_code == 200 and sent.json()["status"] == "SUCCESS"
    assert alice.status(sent.json()["task_id"])["kwargs"]["message"] == "raw"
    lines = json.dumps({"task": "notifications/send", "body": body}).encode()
    batch = alice.request("POST", "/api/v1/batches", content=lines,
                          headers={"Content-Type": "application/x-ndjson"})  # fmt: skip
    assert batch.status_code == 202 and batch.headers["Location"].endswith(batch.json()["batch_id"])
    with ClawClient("http://127.0.0.1:9", ALICE) as nowhere, pytest.raises(ClawConnectionError):
        nowhere.request("GET", "/api/v1/tasks/stats")
