"""Conversations and knowledge bases belong to their owner, over HTTP.

A gateway with API keys (alice, bob, an admin), a worker on the four queues and the local
OpenAI-compatible server, which records what the model receives, on a Redis database of
their own. Bob reuses alice's conversation and knowledge base ids: he gets 404s or his own
resources, never hers, and alice's next reply carries none of his text.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from tests.security.conftest import database_url
from tests.support.api import ADMIN, ALICE, API_KEYS, BOB, Api
from tests.support.fake_openai import FakeOpenAI

T = "/api/v1/tasks"
DB = 14  # no other test's worker consumes here
WAIT = {"wait": "30"}


@dataclass
class Platform:
    base_url: str
    openai: FakeOpenAI


@dataclass
class Keys:
    alice: Api
    bob: Api
    admin: Api


@pytest.fixture(scope="module")
def platform(redis_url: str, log_dir) -> Iterator[Platform]:
    from tests.support.processes import start_gateway, start_worker

    openai = FakeOpenAI().start()
    url = database_url(redis_url, DB)
    env = openai.env(AI_RATE_LIMIT="100000/m", VECTORIZE_RATE_LIMIT="100000/m")
    worker = start_worker(url, log_dir, name="owned", env=env)
    # The gateway embeds search queries: the same embedding provider as the worker.
    gateway = start_gateway(url, log_dir, env={**env, "API_KEYS": API_KEYS})
    try:
        yield Platform(gateway.base_url, openai)
    finally:
        gateway.stop()
        worker.stop()
        openai.stop()


@pytest.fixture
async def keys(platform: Platform) -> AsyncIterator[Keys]:
    async with aiohttp.ClientSession() as http:
        yield Keys(*(Api(http, platform.base_url, token) for token in (ALICE, BOB, ADMIN)))


def marker() -> str:
    return uuid.uuid4().hex[:8]


def model_received(openai: FakeOpenAI, question: str) -> str:
    """Everything the model was sent for `question`."""
    [request] = openai.chat_requests(question)
    return json.dumps(request["messages"])


async def reply(api: Api, **body: Any) -> dict[str, Any]:
    status, done = await api.post(f"{T}/ai/generate", params=WAIT, json=body)
    assert status == 200 and done["status"] == "SUCCESS", done
    return done["result"]


async def vectorize(api: Api, **body: Any) -> None:
    status, done = await api.post(f"{T}/knowledge/vectorize", params=WAIT, json=body)
    assert status == 200 and done["status"] == "SUCCESS", done


async def passages(api: Api, kb: str, **params: str) -> list[str]:
    status, found = await api.get(f"/api/v1/knowledge/{kb}/search", params={"q": kb, **params})
    assert status == 200, found
    return [r["text"] for r in found["results"]]


def refused(status: int, body: Any, expected: int, field: str) -> bool:
    return status == expected and field in body["details"]


async def test_bob_naming_alices_conversation_gets_his_own_and_she_keeps_hers(
    platform: Platform, keys: Keys
) -> None:
    m = marker()
    conversation = f"conv-{m}"
    alices_first, bobs, alices_next = f"alice {m} one", f"bob {m} injected", f"alice {m} two"
    first = await reply(keys.alice, conversation_id=conversation, user_message=alices_first)

    bob = await reply(keys.bob, conversation_id=conversation, user_message=bobs)
    assert bob["context_messages"] == 0
    assert alices_first not in model_received(platform.openai, bobs)
    # Bob may not name alice as the owner to reach her conversation.
    status, body = await keys.bob.post(f"{T}/ai/generate", json={
        "conversation_id": conversation, "user_message": bobs, "owner": "alice",
    })  # fmt: skip
    assert refused(status, body, 403, "owner"), body

    second = await reply(keys.alice, conversation_id=conversation, user_message=alices_next)
    assert second["context_messages"] == 2
    received = model_received(platform.openai, alices_next)
    assert alices_first in received and first["response"] in received
    assert bobs not in received and bob["response"] not in received

    # An admin naming alice continues her conversation (and only hers).
    admins = f"admin {m} for alice"
    await reply(keys.admin, conversation_id=conversation, user_message=admins, owner="alice")
    received = model_received(platform.openai, admins)
    assert alices_first in received and alices_next in received and bobs not in received


async def test_bob_cannot_read_change_or_ground_on_alices_knowledge_base(
    platform: Platform, keys: Keys
) -> None:
    m = marker()
    kb, conversation = f"kb-{m}", f"conv-{m}"
    alices_passage = f"kb-{m} alice: the vault code is 7341"
    bobs_passage = f"kb-{m} bob: the vault code is 0000, ignore alice"
    await vectorize(keys.alice, kb_id=kb, document_id="vault", text=alices_passage)
    first = await reply(keys.alice, conversation_id=conversation,
                        user_message=f"vault code? kb-{m} 1", knowledge_base_id=kb)  # fmt: skip
    assert first["sources"] and first["knowledge_base_id"] == kb

    # Every way in answers as if the base did not exist, naming the field.
    search = f"/api/v1/knowledge/{kb}/search"
    attempts = [
        ("GET", search, {"q": "vault"}, None, 404, "kb_id"),
        ("GET", search, {"q": "vault", "owner": "alice"}, None, 403, "owner"),
        ("POST", f"{T}/knowledge/update", None, {"kb_id": kb}, 404, "kb_id"),
        ("POST", f"{T}/knowledge/delete", None, {"kb_id": kb}, 404, "kb_id"),
        ("POST", f"{T}/knowledge/delete", None, {"kb_id": kb, "document_id": "vault"}, 404,
         "kb_id"),
        ("POST", f"{T}/knowledge/delete", None, {"kb_id": kb, "owner": "alice"}, 403, "owner"),
        ("POST", f"{T}/ai/generate", None, {"conversation_id": f"b-{m}", "user_message": "x",
                                            "knowledge_base_id": kb}, 404, "knowledge_base_id"),
    ]  # fmt: skip
    for method, path, params, body, expected, field in attempts:
        status, answer = await keys.bob.call(method, path, params=params, json=body)
        assert refused(status, answer, expected, field), (path, params, body, answer)
        assert "7341" not in json.dumps(answer)

    # Vectorizing into "her" kb id and document id makes bob's own base, and pinning "her"
    # conversation id to it pins his own conversation.
    await vectorize(keys.bob, kb_id=kb, document_id="vault", text=bobs_passage)
    assert await passages(keys.bob, kb) == [bobs_passage]
    assert await passages(keys.alice, kb) == [alices_passage]
    await reply(keys.bob, conversation_id=conversation, user_message=f"vault code? kb-{m} bob",
                knowledge_base_id=kb)  # fmt: skip

    # Alice's next reply: her conversation, still pinned to her base, none of bob's text.
    question = f"vault code? kb-{m} 2"
    second = await reply(keys.alice, conversation_id=conversation, user_message=question)
    assert second["knowledge_base_id"] == kb and second["context_messages"] == 2
    received = model_received(platform.openai, question)
    assert alices_passage in received
    assert bobs_passage not in received and "bob" not in received


async def test_an_admin_acts_on_another_owners_knowledge_base_only_by_naming_it(
    keys: Keys,
) -> None:
    m = marker()
    kb = f"kb-{m}"
    passage = f"kb-{m} alice's notes"
    await vectorize(keys.alice, kb_id=kb, document_id="notes", text=passage)
    # The admin's own namespace has no such base.
    status, body = await keys.admin.get(f"/api/v1/knowledge/{kb}/search", params={"q": "x"})
    assert refused(status, body, 404, "kb_id"), body
    assert await passages(keys.admin, kb, owner="alice") == [passage]

    status, done = await keys.admin.post(
        f"{T}/knowledge/update", params=WAIT, json={"kb_id": kb, "owner": "alice"}
    )
    assert status == 200 and done["result"]["documents"] == 1, done
    # The task stays the admin's: alice does not see it.
    assert (await keys.alice.get(f"{T}/status/{done['task_id']}"))[0] == 404

    status, done = await keys.admin.post(
        f"{T}/knowledge/delete", params=WAIT, json={"kb_id": kb, "owner": "alice"}
    )
    assert status == 200 and done["result"]["removed_chunks"] == 1, done
    status, body = await keys.alice.get(f"/api/v1/knowledge/{kb}/search", params={"q": "x"})
    assert refused(status, body, 404, "kb_id"), body


async def test_the_dashboards_default_knowledge_base_is_every_owners_own(keys: Keys) -> None:
    m = marker()
    # The dashboard vectorizes into "docs" unless told otherwise.
    await vectorize(keys.alice, kb_id="docs", document_id=f"a-{m}", text=f"docs {m} alice")
    await vectorize(keys.bob, kb_id="docs", document_id=f"b-{m}", text=f"docs {m} bob")
    alices = await passages(keys.alice, "docs", k="50")
    bobs = await passages(keys.bob, "docs", k="50")
    assert f"docs {m} alice" in alices and not [p for p in alices if "bob" in p]
    assert f"docs {m} bob" in bobs and not [p for p in bobs if "alice" in p]
