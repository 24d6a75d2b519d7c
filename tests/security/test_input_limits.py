"""Inputs that reached the model unchecked or answered 500, over HTTP, with a real worker.

A gateway with API keys (in-process) and a worker share a Redis database of their own; the
worker's model is the local OpenAI-compatible server, which keeps every request it
receives, so a test can tell what reached the model and what never did.

- The model and `max_tokens` of an AI reply: an allow-list and a cap per role, at the
  gateway (400 naming the field) and again in the worker for Python publishers.
- A deeply nested JSON body: 400 naming the body (was a RecursionError, 500).
- Ids that are not task ids (`<id>:chunks` names the task's reply list): 404 on every
  route and a null snapshot on the websocket (was Redis' WRONGTYPE, 500).
- A refused webhook target: the task's error does not list what the name resolves to.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
import redis

from tests.security.conftest import database_url
from tests.support.api import ADMIN, ALICE, API_KEYS, Api
from tests.support.fake_openai import FakeOpenAI
from tests.support.waiting import async_wait_until, wait_for_state
from workers.core import queues
from workers.core.keys import chunks_key
from workers.core.settings import load_settings
from workers.runtime.celery_config import create_celery_app

pytestmark = pytest.mark.slow

DB = 17  # no other test's worker consumes here
MAX_USER, MAX_ADMIN = 1000, 2000
# The settings the worker and the gateway share.
SHARED = {
    "MAX_TOKENS_USER": str(MAX_USER), "MAX_TOKENS_ADMIN": str(MAX_ADMIN),
    "WEBHOOK_SECRET": "limits-secret",
}  # fmt: skip
T = "/api/v1/tasks"
AI = f"{T}/ai/generate"


@pytest.fixture(scope="module")
def model() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def limits_worker(redis_url, log_dir, model) -> Iterator[SimpleNamespace]:
    from tests.support.processes import start_worker

    url = database_url(redis_url, DB)
    client = redis.Redis.from_url(url, decode_responses=True)
    client.flushdb()
    env = {**model.env(), **SHARED}
    worker = start_worker(url, log_dir, queues="ai_high_priority,notification_default",
                          concurrency=2, name="limits", env=env)  # fmt: skip
    yield SimpleNamespace(url=url, client=client)
    worker.stop()
    client.close()


@pytest.fixture
async def stack(limits_worker, serve_gateway) -> SimpleNamespace:
    """The worker, and the gateway (in-process) with the same settings and API keys."""
    shared = {name.lower(): value for name, value in SHARED.items()}
    gateway = await serve_gateway(redis_url=limits_worker.url, api_keys=API_KEYS, **shared)
    return SimpleNamespace(**vars(limits_worker), gateway=gateway)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def alice(http, stack) -> Api:
    return Api(http, stack.gateway.base_url, ALICE)


@pytest.fixture
def admin(http, stack) -> Api:
    return Api(http, stack.gateway.base_url, ADMIN)


def ai_body(marker: str, **extra: Any) -> dict[str, Any]:
    return {"conversation_id": f"conv-{marker}", "user_message": f"hi {marker}", **extra}


def marker() -> str:
    return uuid.uuid4().hex[:12]


async def reply(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    status, done = await api.post(AI, json=body, params={"wait": "20"})
    assert status == 200 and done["status"] == "SUCCESS", (status, done)
    return done


# --- the model and max_tokens -----------------------------------------------------------


async def test_an_allowed_model_and_max_tokens_within_the_roles_cap_reach_the_model(
    alice, admin, model
) -> None:
    mine, theirs = marker(), marker()
    await reply(alice, ai_body(mine, model="gpt-4o", max_tokens=MAX_USER))
    await reply(admin, ai_body(theirs, max_tokens=MAX_ADMIN))
    [sent] = model.chat_requests(mine)
    assert sent["model"] == "gpt-4o" and sent["max_tokens"] == MAX_USER
    [sent] = model.chat_requests(theirs)
    assert sent["model"] == "gpt-4o-mini" and sent["max_tokens"] == MAX_ADMIN


async def test_another_model_or_more_tokens_is_400_naming_the_field_and_never_reaches_the_model(
    alice, admin, model
) -> None:
    cases = [
        (alice, {"model": "o1-pro-2025-03-19", "max_tokens": 128_000}, {"model", "max_tokens"}),
        (alice, {"model": "o1-pro-2025-03-19"}, {"model"}),
        (alice, {"model": "gpt-4o-mini-2024-07-18"}, {"model"}),  # allowed means listed
        (alice, {"max_tokens": MAX_USER + 1}, {"max_tokens"}),  # the user's cap
        (admin, {"max_tokens": MAX_ADMIN + 1}, {"max_tokens"}),  # the admin's
        (admin, {"model": "gpt-5-pro"}, {"model"}),
    ]
    refused = []
    for api, extra, fields in cases:
        refused.append(marker())
        status, body = await api.post(AI, json=ai_body(refused[-1], **extra))
        assert status == 400, (extra, status, body)
        assert set(body["details"]) == fields, body
    # A later, allowed request is answered: the refused ones had their chance to arrive.
    await reply(alice, ai_body(marker()))
    assert [m for m in refused if model.chat_requests(m)] == []


def test_a_python_publisher_cannot_pass_the_limits_either(limits_worker, model) -> None:
    app = create_celery_app(load_settings(redis_url=limits_worker.url))
    other_model, too_many = marker(), marker()
    first = app.send_task(queues.GENERATE_AI_RESPONSE, kwargs=ai_body(other_model, model="o1-pro"))
    second = app.send_task(queues.GENERATE_AI_RESPONSE, kwargs=ai_body(too_many, max_tokens=10**6))
    failed = wait_for_state(app, first.id, {"SUCCESS", "FAILURE"}, timeout=30)
    assert failed.state == "FAILURE" and "not allowed" in str(failed.result)
    assert model.chat_requests(other_model) == []
    assert wait_for_state(app, second.id, {"SUCCESS", "FAILURE"}, timeout=30).state == "SUCCESS"
    [sent] = model.chat_requests(too_many)
    assert sent["max_tokens"] == MAX_ADMIN  # clamped to the larger cap: no role is known
    app.close()


# --- deeply nested bodies ---------------------------------------------------------------


async def test_a_deeply_nested_body_is_400_naming_the_body(alice, stack) -> None:
    deep = 100_000
    forty = json.loads('{"a":' * 40 + "1" + "}" * 40)
    note = {"channel": "in_app", "recipient": "alice", "message": "m", "data": forty}
    bodies = {
        AI: ["[" * deep + "]" * deep, '{"a":' * deep + "1" + "}" * deep],
        f"{T}/notifications/send": [json.dumps(note)],  # within the parser's limit, over ours
    }
    for path, texts in bodies.items():
        for text in texts:
            status, body = await alice.post(
                path, data=text, headers={"Content-Type": "application/json"}
            )
            assert status == 400, (path, text[:20], status, body)
            assert "body" in body["details"], body
    # A body nested a few levels is fine.
    nested = {"channel": "in_app", "recipient": "alice", "message": "m",
              "data": {"a": {"b": {"c": [1, {"d": 2}]}}}}  # fmt: skip
    status, body = await alice.post(f"{T}/notifications/send", json=nested)
    assert status == 202, body


# --- ids that are not task ids ----------------------------------------------------------


async def test_ids_that_are_not_task_ids_are_404_on_every_route_never_500(
    alice, admin, stack
) -> None:
    done = await reply(alice, ai_body(marker()))
    task_id = done["task_id"]
    # The reply's chunk list sits at the key a task named "<id>:chunks" would have.
    assert stack.client.type(chunks_key(task_id)) == "list"
    odd = [f"{task_id}:chunks", f"{task_id}:x", "x" * 300, "a%20b", "%E2%80%A6"]
    for api in (alice, admin):
        for bad in odd:
            for method, path in (("GET", "status"), ("POST", "cancel"), ("POST", "retry")):
                status, body = await api.call(method, f"{T}/{path}/{bad}")
                assert status == 404 and body["error"], (method, path, bad, status, body)
    # The real id still answers.
    assert (await alice.get(f"{T}/status/{task_id}"))[0] == 200


async def test_subscribing_to_an_id_that_is_not_a_task_id_gets_a_null_snapshot(http, stack) -> None:
    api = Api(http, stack.gateway.base_url, ALICE)
    done = await reply(api, ai_body(marker()))
    task_id = done["task_id"]
    url = f"{stack.gateway.base_url}{T}/ws"
    async with http.ws_connect(url, headers=api.headers()) as ws:
        await ws.send_json({"action": "subscribe", "task_ids": [f"{task_id}:chunks", task_id]})
        await ws.send_json({"action": "ping"})
        seen: dict[str, Any] = {}

        async def until_pong() -> bool:
            msg = await ws.receive_json(timeout=10)
            if msg["type"] == "snapshot":
                seen[msg["task_id"]] = msg
            return msg["type"] == "pong"

        await async_wait_until(until_pong, 15, 0, "pong after the snapshots")
    assert seen[f"{task_id}:chunks"]["task"] is None
    assert seen[task_id]["state"] == "SUCCESS"


# --- webhook errors ---------------------------------------------------------------------


async def test_a_refused_webhook_target_does_not_reveal_what_it_resolves_to(alice) -> None:
    body = {"channel": "webhook", "recipient": "http://localhost:9/hook", "message": "m"}
    status, done = await alice.post(f"{T}/notifications/send", json=body, params={"wait": "20"})
    assert status == 200 and done["status"] == "FAILURE", done
    status, record = await alice.get(f"{T}/status/{done['task_id']}")
    for error in (done["error"], record["error"]):
        assert "localhost" in error and "refused" in error
        assert "127.0.0.1" not in error and "::1" not in error
