"""Batches against the real gateway, a real worker and a local webhook receiver: JSON Lines
in, a batch id at once, progress and counts by state, paged items linked to the batch, a
completion webhook when every item has ended, all-or-nothing validation naming the line,
cancellation, and isolation."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from claw_client import AsyncClawClient
from claw_client.errors import Conflict

from tests.support.api import ADMIN, ALICE, API_KEYS, BOB
from tests.support.processes import database_url
from tests.support.waiting import async_wait_until
from workers.core.keys import task_key

ALLOWED = "127.0.0.1/32"
BATCHES = "/api/v1/batches"
JSONL = "application/x-ndjson"


@pytest.fixture(scope="module")
def batch_redis_url(redis_url: str) -> str:
    """A database of its own: the suite's shared worker never takes our tasks."""
    return database_url(redis_url, 2)


@pytest.fixture(scope="module")
def batch_gateway(batch_redis_url, log_dir) -> Iterator[Any]:
    from tests.support.processes import start_gateway, start_worker

    env = {"WEBHOOK_ALLOWED_NETWORKS": ALLOWED}
    worker = start_worker(
        batch_redis_url, log_dir, name="batches", concurrency=4, env=env,
        queues="default,notification_default,ai_high_priority,knowledge_default",
    )  # fmt: skip
    gateway = start_gateway(batch_redis_url, log_dir, env={"API_KEYS": API_KEYS, **env})
    yield gateway
    gateway.stop()
    worker.stop()


@pytest.fixture
async def http(batch_gateway) -> AsyncIterator[Any]:
    async with aiohttp.ClientSession(base_url=batch_gateway.base_url) as session:
        yield session


@pytest.fixture
async def alice(batch_gateway) -> AsyncIterator[AsyncClawClient]:
    """The client package's batch calls (a raw session sends what it cannot)."""
    async with AsyncClawClient(batch_gateway.base_url, ALICE) as client:
        yield client


async def call(http, key: str, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key}", **kwargs.pop("headers", {})}
    async with http.request(method, path, headers=headers, **kwargs) as resp:
        return resp.status, await resp.json()


def lines(*items: dict[str, Any]) -> bytes:
    return "\n".join(json.dumps(item) for item in items).encode() + b"\n"


def note(n: int, **extra: Any) -> dict[str, Any]:
    body = {"channel": "in_app", "recipient": "alice", "message": f"item {n}", **extra}
    return {"task": "notifications/send", "body": body}


async def post_batch(http, key: str, body: bytes, **params: Any) -> tuple[int, Any]:
    return await call(http, key, "POST", BATCHES, data=body, params=params,
                      headers={"Content-Type": JSONL})  # fmt: skip


async def batch_in(client: AsyncClawClient, batch_id: str, states: set[str]) -> dict[str, Any]:
    async def reached() -> Any:
        body = await client.batch(batch_id)
        return body if body["status"] in states else None

    return await async_wait_until(reached, 60, 0.1, f"batch {batch_id} in {states}")


async def test_a_batch_runs_its_items_and_calls_back_when_all_have_ended(
    http, alice, receiver
) -> None:
    items = [note(n, tags=["batch-test"]) for n in range(25)]
    items.append({"task": "ai/generate", "body": {"conversation_id": "b", "user_message": "hi"}})
    answer = await alice.submit_batch(
        [(item["task"], item["body"]) for item in items], webhook=f"{receiver.base_url}/ok/batch"
    )
    assert answer["total"] == 26 and answer["status"] == "PENDING", answer
    batch_id = answer["batch_id"]

    done = await batch_in(alice, batch_id, {"SUCCESS", "FAILURE", "REVOKED"})
    assert done["status"] == "SUCCESS", done
    assert done["total"] == done["published"] == done["ended"] == 26
    assert done["counts"] == {"SUCCESS": 26} and not done["cancelled"]
    # Items: ordinary tasks of the owner, linked to the batch, paged.
    page = await alice.batch(batch_id, limit=10)
    assert len(page["items"]) == 10 and page["next_cursor"]
    seen = [t["task_id"] for t in page["items"]]
    cursor = page["next_cursor"]
    while cursor:
        page = await alice.batch(batch_id, limit=10, cursor=cursor)
        seen += [t["task_id"] for t in page["items"]]
        cursor = page["next_cursor"]
    assert (await alice.list(tag="batch-test"))["count"] == 25
    assert sorted(seen) == sorted(f"{batch_id}-{n}" for n in range(26))
    _, item = await call(http, ALICE, "GET", f"/api/v1/tasks/status/{batch_id}-3")
    assert item["owner"] == "alice" and item["tags"] == ["batch-test"]
    assert item["kwargs"]["message"] == "item 3" and item["status"] == "SUCCESS"

    # The completion webhook: the batch's status body, once.
    async def delivered() -> bool:
        return len(receiver.received["batch"]) >= 1

    await async_wait_until(delivered, 20, what="the batch's webhook")
    [delivery] = receiver.received["batch"]
    payload = json.loads(delivery["body"])
    assert payload["type"] == "task.completed" and payload["data"]["task_id"] == batch_id
    assert payload["data"]["result"]["counts"] == {"SUCCESS": 26}


async def test_a_bad_line_refuses_the_whole_batch_naming_it(http, batch_redis_url) -> None:
    body = lines(note(0), {"task": "notifications/send", "body": {"channel": "fax"}},
                 {"task": "nope", "body": {}}, note(3, webhook={"url": "http://x"}))  # fmt: skip
    status, answer = await post_batch(http, ALICE, body + b"{not json\n")
    assert status == 400, answer
    details = answer["details"]
    assert set(details) == {"line 2", "line 3", "line 4", "line 5"}, details
    assert "channel" in details["line 2"] and "task" in details["line 3"]
    assert "webhook" in details["line 4"] and "line" in details["line 5"]
    # Another's inbox is refused as its endpoint refuses it (403), naming the line.
    other = {"task": "notifications/send",
             "body": {"channel": "in_app", "recipient": "bob", "message": "x"}}  # fmt: skip
    status, answer = await post_batch(http, ALICE, lines(note(0), other))
    assert status == 403 and answer["error"].startswith("line 2:"), answer
    status, answer = await call(http, ALICE, "POST", BATCHES, data=lines(note(0)),
                                headers={"Content-Type": "application/json"})  # fmt: skip
    assert status == 415
    status, answer = await post_batch(http, ALICE, b"\n\n")
    assert status == 400 and "body" in answer["details"]
    # Many bad lines: the first 20 are named, the rest not even validated.
    status, answer = await post_batch(http, ALICE, lines(*([{"task": "nope"}] * 50)))
    assert status == 400 and len(answer["details"]) == 20, answer
    # A batch webhook the policy refuses: refused before its items are stored.
    status, answer = await post_batch(http, ALICE, lines(note(0)), webhook="http://10.1.2.3/x")
    assert status in (400, 422) and "webhook" in json.dumps(answer), answer
    # Nothing was submitted or kept by any of them.
    assert orphans(batch_redis_url) == []


async def test_a_cancelled_batch_stops_its_waiting_items(alice) -> None:
    answer = await alice.submit_batch(
        [("notifications/send", note(n, countdown=3600)["body"]) for n in range(12)]
    )
    batch_id = answer["batch_id"]

    async def all_published() -> Any:
        body = await alice.batch(batch_id)
        return body["published"] == 12 and body["status"] == "STARTED"

    await async_wait_until(all_published, 30, 0.1, "the items published")
    answer = await alice.cancel_batch(batch_id)
    assert answer["status"] == "CANCELLING", answer
    done = await batch_in(alice, batch_id, {"REVOKED", "SUCCESS"})
    assert done["status"] == "REVOKED" and done["cancelled"], done
    assert done["counts"] == {"REVOKED": 12} and done["ended"] == 12
    with pytest.raises(Conflict):
        await alice.cancel_batch(batch_id)


async def test_batches_belong_to_their_owner(http) -> None:
    status, answer = await post_batch(http, ALICE, lines(note(0)))
    assert status == 202
    batch_id = answer["batch_id"]
    for method, path in (("GET", f"{BATCHES}/{batch_id}"),
                         ("POST", f"{BATCHES}/{batch_id}/cancel")):  # fmt: skip
        assert (await call(http, BOB, method, path))[0] == 404
    assert (await call(http, ADMIN, "GET", f"{BATCHES}/{batch_id}"))[0] == 200
    # A task that is not a batch is no batch.
    assert (await call(http, ALICE, "GET", f"{BATCHES}/{batch_id}-0"))[0] == 404
    async with http.get(f"{BATCHES}/{batch_id}") as resp:
        assert resp.status == 401


def orphans(url: str) -> list[str]:
    """Batches stored without a task to run them."""
    import redis

    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return [k for k in client.scan_iter("claw:batch:*")
                if not client.exists(task_key(k.split(":")[2]))]  # fmt: skip
    finally:
        client.close()


async def test_the_same_batch_twice_with_an_idempotency_key_runs_once(
    http, alice, batch_redis_url
) -> None:
    body = lines(*(note(n) for n in range(3)))
    key = {"Content-Type": JSONL, "Idempotency-Key": f"batch-{uuid.uuid4()}"}
    status, first = await call(http, ALICE, "POST", BATCHES, data=body, headers=key)
    assert status == 202, first
    async with http.post(BATCHES, data=body, headers={**key,
                         "Authorization": f"Bearer {ALICE}"}) as resp:  # fmt: skip
        again = await resp.json()
        assert resp.status == 202 and resp.headers["Idempotent-Replayed"] == "true"
    assert again["batch_id"] == first["batch_id"] and again["total"] == 3
    done = await batch_in(alice, first["batch_id"], {"SUCCESS"})
    assert done["published"] == 3 and done["counts"] == {"SUCCESS": 3}
    # Another body under the same key is refused, and nothing of it is kept.
    status, answer = await call(http, ALICE, "POST", BATCHES, data=lines(note(9)), headers=key)
    assert status == 422, answer
    assert orphans(batch_redis_url) == []


async def test_cancelling_a_batch_answers_202_naming_the_batch_to_poll(http, alice) -> None:
    answer = await alice.submit_batch(
        [("notifications/send", note(n, countdown=3600)["body"]) for n in range(3)]
    )
    batch_id = answer["batch_id"]
    headers = {"Authorization": f"Bearer {ALICE}"}
    async with http.post(f"{BATCHES}/{batch_id}/cancel", headers=headers) as resp:
        assert resp.status == 202 and (await resp.json())["status"] == "CANCELLING"
        location = resp.headers["Location"]
    assert location == f"{BATCHES}/{batch_id}"
    status, polled = await call(http, ALICE, "GET", location)
    assert status == 200 and polled["batch_id"] == batch_id and polled["cancelled"]
    await batch_in(alice, batch_id, {"REVOKED", "SUCCESS"})
