"""Tags and metadata on submissions, list filters on them, and bulk cancel/retry by filter,
against the real gateway, a real worker and the shared Redis."""

from __future__ import annotations

import json
import uuid

from claw_client import AsyncClawClient

from tests.service.test_tasks_api import AI, T, ai_body, wait_status
from tests.service.test_usage import spent_today
from tests.support.api import ADMIN, ALICE, API_KEYS
from tests.support.waiting import async_wait_until
from workers.core.keys import events_key

NOTIFY = "/api/v1/tasks/notifications/send"
# Owners of this module's own: their AI budgets are no other test's.
HANK, IVY = "hank-token-0123456789", "ivy-token-0123456789"


def later(**extra):
    """A task that stays PENDING for an hour (bulk actions find it waiting)."""
    return ai_body(countdown=3600, **extra)


async def listed(api, **params) -> set[str]:
    status, body = await api.get(f"{T}/list", params={"limit": 500, **params})
    assert status == 200, body
    return {t["task_id"] for t in body["tasks"]}


async def test_tags_and_metadata_are_on_the_record_in_rest_and_in_the_feed(
    alice, rclient, worker
) -> None:
    tag = f"t-{uuid.uuid4().hex[:6]}"
    meta = {"customer": "acme", "n": 42, "vip": True, "nested": {"x": 1}}
    status, body = await alice.post(AI, json=ai_body(tags=[tag, "chat"], metadata=meta))
    assert status == 202, body
    done = await wait_status(alice, body["task_id"], {"SUCCESS"})
    assert done["tags"] == [tag, "chat"] and done["metadata"] == meta
    # Not task arguments: the task ran with its own kwargs only.
    assert "tags" not in done["kwargs"] and "metadata" not in done["kwargs"]
    _, page = await alice.get(f"{T}/list", params={"tag": tag})
    assert [(t["tags"], t["metadata"]) for t in page["tasks"]] == [([tag, "chat"], meta)]
    first = json.loads(rclient.lindex(events_key(body["task_id"]), 0))
    assert first["state"] == "PENDING" and first["tags"] == [tag, "chat"]
    assert first["metadata"] == meta


async def test_list_filters_by_tag_and_metadata_within_the_owner(alice, bob, admin, worker):
    tag = f"t-{uuid.uuid4().hex[:6]}"
    mine = {(await alice.post(AI, json=later(tags=[tag], metadata={"k": f"v{i}"})))[1]["task_id"]
            for i in range(3)}  # fmt: skip
    other = (await alice.post(AI, json=later(tags=["else"], metadata={"k": "v0"})))[1]["task_id"]
    bobs = (await bob.post(AI, json=later(tags=[tag], metadata={"k": "v0"})))[1]["task_id"]
    assert await listed(alice, tag=tag) == mine
    assert await listed(bob, tag=tag) == {bobs}
    assert await listed(admin, tag=tag) == mine | {bobs}
    assert await listed(admin, tag=tag, owner="alice") == mine
    v0 = await listed(alice, metadata="k=v0")
    assert other in v0 and bobs not in v0 and len(v0 & mine) == 1
    # Both, and with a state: every filter holds.
    assert await listed(alice, tag=tag, metadata="k=v0") == v0 & mine
    assert await listed(alice, tag=tag, status="PENDING") == mine
    assert await listed(alice, tag=tag, status="SUCCESS") == set()
    assert await listed(alice, tag="never-used") == set()


async def test_bad_tags_and_metadata_are_400_naming_the_field(alice) -> None:
    cases = [
        ({"tags": ["has space"]}, "tags"),
        ({"tags": [f"t{i}" for i in range(11)]}, "tags"),
        ({"metadata": {"bad key": 1}}, "metadata"),
        ({"metadata": {"big": "x" * 5000}}, "metadata"),
        ({"metadata": ["not", "an", "object"]}, "metadata"),
    ]
    for extra, field in cases:
        status, body = await alice.post(AI, json=ai_body(**extra))
        assert status == 400 and field in body["details"], (extra, body)
    for params, field in (({"tag": "a b"}, "tag"), ({"metadata": "no-equals"}, "metadata")):
        status, body = await alice.get(f"{T}/list", params=params)
        assert status == 400 and field in body["details"], body


async def test_bulk_cancel_then_retry_by_tag_with_a_dry_run_first(alice, bob, worker) -> None:
    tag = f"bulk-{uuid.uuid4().hex[:6]}"
    # (A name the delivery refuses, so no attempt is retried: only the record matters here.)
    hook = {"url": "http://localhost:9/hook", "events": ["completed"]}
    mine = {(await alice.post(AI, json=later(tags=[tag], webhook=hook)))[1]["task_id"]
            for _ in range(5)}  # fmt: skip
    bobs = (await bob.post(AI, json=later(tags=[tag])))[1]["task_id"]

    status, dry = await alice.post(f"{T}/bulk/cancel", json={"tag": tag, "dry_run": True})
    assert status == 200 and dry == {"action": "cancel", "dry_run": True, "matched": 5,
                                     "truncated": False}, dry  # fmt: skip
    assert await listed(alice, tag=tag, status="PENDING") == mine  # a dry run changes nothing

    status, bulk = await alice.post(f"{T}/bulk/cancel", json={"tag": tag})
    assert status == 202, bulk
    done = await wait_status(alice, bulk["task_id"], {"SUCCESS", "FAILURE"})
    assert done["status"] == "SUCCESS", done
    assert done["result"] == {"action": "cancel", "matched": 5, "done": 5, "skipped": {},
                              "truncated": False}  # fmt: skip
    assert done["owner"] == "alice" and done["progress"]["percent"] == 100
    assert await listed(alice, tag=tag, status="REVOKED") == mine
    _, theirs = await bob.get(f"{T}/status/{bobs}")
    assert theirs["status"] == "PENDING"  # another owner's task with the same tag

    # Again: nothing left to cancel; each skipped with its reason.
    _, again = await alice.post(f"{T}/bulk/cancel", json={"tag": tag})
    second = await wait_status(alice, again["task_id"], {"SUCCESS"})
    assert second["result"]["done"] == 0 and second["result"]["skipped"] == {"finished": 5}

    # Retry what was cancelled: new tasks, linked, with the same tags.
    _, bulk = await alice.post(f"{T}/bulk/retry", json={"tag": tag, "status": "REVOKED"})
    retried = await wait_status(alice, bulk["task_id"], {"SUCCESS"})
    assert retried["result"]["done"] == 5, retried

    async def all_done() -> set[str] | None:
        new = await listed(alice, tag=tag, status="SUCCESS") - mine
        return new if len(new) == 5 else None

    new = await async_wait_until(all_done, 30, 0.1, "the 5 retries done")
    for task_id in new:
        _, body = await alice.get(f"{T}/status/{task_id}")
        assert body["retried_from"] in mine and body["tags"] == [tag]
        # As a single retry does, a bulk retry keeps the task's webhook.
        _, hooks = await alice.get(f"{T}/{task_id}/webhooks")
        assert hooks["webhook"] == hook


async def test_a_bulk_retry_skips_the_ai_tasks_of_an_owner_over_budget(
    serve_gateway, rclient, worker
) -> None:
    gateway = await serve_gateway(api_keys=f"{API_KEYS},{HANK}:hank:user,{IVY}:ivy:user")
    hank, ivy, admin = gateway.api(HANK), gateway.api(IVY), gateway.api(ADMIN)
    tag = f"budget-{uuid.uuid4().hex[:6]}"
    hanks_ai = {(await hank.post(AI, json=later(tags=[tag])))[1]["task_id"] for _ in range(2)}
    note = {"channel": "in_app", "recipient": "hank", "message": "hi", "countdown": 3600,
            "tags": [tag]}  # fmt: skip
    status, body = await hank.post(NOTIFY, json=note)
    assert status == 202, body
    hanks_note = body["task_id"]
    ivys_ai = (await ivy.post(AI, json=later(tags=[tag])))[1]["task_id"]
    everyone = {*hanks_ai, hanks_note, ivys_ai}
    _, bulk = await admin.post(f"{T}/bulk/cancel", json={"tag": tag})
    cancelled = await wait_status(admin, bulk["task_id"], {"SUCCESS"})
    assert cancelled["result"]["done"] == 4, cancelled

    with spent_today(rclient, "hank", 1.0):
        status, budget = await admin.call("PUT", "/api/v1/budgets/hank", json={"cost_per_day": 0.5})
        assert status == 200 and budget["exceeded"] == ["cost_per_day"], budget
        # An admin's retry of every owner's: hank's AI tasks are skipped, counted with
        # their reason; his notification and ivy's AI task are retried.
        _, bulk = await admin.post(f"{T}/bulk/retry", json={"tag": tag, "status": "REVOKED"})
        retried = await wait_status(admin, bulk["task_id"], {"SUCCESS"})
        assert retried["result"] == {
            "action": "retry", "matched": 4, "done": 2, "skipped": {"over_budget": 2},
            "truncated": False,
        }, retried  # fmt: skip
        for task_id in everyone:
            _, body = await admin.get(f"{T}/status/{task_id}")
            assert bool(body.get("retried_as")) == (task_id not in hanks_ai), body
        # As a retry of one of them is refused.
        status, body = await hank.post(f"{T}/retry/{next(iter(hanks_ai))}")
        assert status == 429 and body["details"]["budget"]["exceeded"] == ["cost_per_day"]

        # Within budget again (his own budget removed: unlimited), they are retried.
        assert (await admin.call("DELETE", "/api/v1/budgets/hank"))[0] == 200
        _, bulk = await hank.post(f"{T}/bulk/retry", json={"tag": tag, "status": "REVOKED"})
        retried = await wait_status(hank, bulk["task_id"], {"SUCCESS"})
        assert retried["result"]["done"] == 2, retried
        assert retried["result"]["skipped"] == {"retried_already": 1}, retried
        for task_id in hanks_ai:
            _, body = await hank.get(f"{T}/status/{task_id}")
            assert body["retried_as"], body


async def test_the_client_counts_and_lists_by_tag(secured_gateway, alice) -> None:
    tag = f"cl-{uuid.uuid4().hex[:6]}"
    for _ in range(3):
        await alice.post(AI, json=later(tags=[tag], metadata={"k": "v"}))
    async with AsyncClawClient(secured_gateway.base_url, ALICE) as client:
        assert (await client.bulk_cancel(tag=tag, dry_run=True))["matched"] == 3
        assert (await client.list(tag=tag, metadata="k=v"))["count"] == 3
        assert (await client.bulk_retry(tag=tag, dry_run=True))["matched"] == 3


async def test_bulk_actions_need_a_filter_and_keep_to_the_owner(alice, bob, worker) -> None:
    status, body = await alice.post(f"{T}/bulk/cancel", json={})
    assert status == 400 and "status" in body["details"]
    status, body = await alice.post(f"{T}/bulk/retry", json={"tag": "x", "limit": 5})
    assert status == 400 and "limit" in body["details"]
    # A user's `owner` is its own whatever it asks for.
    tag = f"own-{uuid.uuid4().hex[:6]}"
    await bob.post(AI, json=later(tags=[tag]))
    status, dry = await alice.post(
        f"{T}/bulk/cancel", json={"tag": tag, "owner": "bob", "dry_run": True}
    )
    assert status == 200 and dry["matched"] == 0


async def test_a_documents_metadata_stays_the_documents(alice) -> None:
    """knowledge/vectorize's `metadata` is the document's (kept with its chunks, any keys):
    an argument of the task, not the task's indexed metadata; its tags are the task's."""
    doc = {"source": "wiki", "long key with spaces": "x" * 5000}
    body = {"document_id": "d1", "kb_id": f"kb-{uuid.uuid4().hex[:6]}", "text": "hello",
            "metadata": doc, "tags": ["docs"], "countdown": 3600}  # fmt: skip
    status, answer = await alice.post("/api/v1/tasks/knowledge/vectorize", json=body)
    assert status == 202, answer
    _, task = await alice.get(f"{T}/status/{answer['task_id']}")
    assert task["kwargs"]["metadata"] == doc and task.get("metadata") is None
    assert task["tags"] == ["docs"]
