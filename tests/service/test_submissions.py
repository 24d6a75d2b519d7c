"""Submission endpoints of the knowledge and notification tasks, end to end."""

from __future__ import annotations

import uuid

from tests.service.test_live_feed import collect, connect

T = "/api/v1/tasks"


async def test_vectorize_search_delete_round_trip_through_the_api(alice, worker) -> None:
    kb = f"kb-{uuid.uuid4().hex[:8]}"
    text = "Redis keeps the queue. " * 20 + "The platform answers about llamas and alpacas."
    status, done = await alice.post(
        f"{T}/knowledge/vectorize", params={"wait": 30},
        json={"document_id": "doc-1", "kb_id": kb, "text": text, "title": "Animals"},
    )  # fmt: skip
    assert status == 200 and done["status"] == "SUCCESS", done
    assert done["progress"]["percent"] == 100.0
    status, found = await alice.get(f"/api/v1/knowledge/{kb}/search", params={"q": "llamas"})
    assert status == 200 and found["results"]
    status, done = await alice.post(
        f"{T}/knowledge/delete", params={"wait": 30}, json={"kb_id": kb, "document_id": "doc-1"}
    )
    assert status == 200 and done["status"] == "SUCCESS"
    # Its only document deleted, the knowledge base is gone.
    status, found = await alice.get(f"/api/v1/knowledge/{kb}/search", params={"q": "llamas"})
    assert status == 404 and "kb_id" in found["details"], found


async def test_bad_knowledge_and_notification_submissions_are_400(alice) -> None:
    status, body = await alice.post(f"{T}/knowledge/vectorize", json={"kb_id": "k"})
    assert status == 400 and {"document_id", "text"} <= set(body["details"])
    status, body = await alice.post(
        f"{T}/notifications/send", json={"channel": "pigeon", "recipient": "x", "message": "m"}
    )
    assert status == 400 and "channel" in body["details"]
    status, body = await alice.post(
        f"{T}/notifications/send",
        json={"channel": "email", "recipient": "not-an-address", "message": "m"},
    )
    assert status == 400 and body["details"]


async def test_in_app_notification_reaches_the_users_live_feed(
    http, alice, bob, secured_gateway, worker
) -> None:
    from tests.support.api import ALICE

    ws = await connect(http, secured_gateway, token=ALICE)
    status, _body = await alice.post(
        f"{T}/notifications/send",
        json={"channel": "in_app", "recipient": "alice", "message": "your report is ready"},
    )
    assert status == 202
    messages = await collect(ws, lambda ms: any(m["type"] == "notification" for m in ms))
    note = next(m for m in messages if m["type"] == "notification")
    assert note["owner"] == "alice" and "your report is ready" in str(note)
    # a user cannot write into someone else's inbox
    status, _ = await bob.post(
        f"{T}/notifications/send",
        json={"channel": "in_app", "recipient": "alice", "message": "spam"},
    )
    assert status == 403
    await ws.close()
