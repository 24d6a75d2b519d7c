"""Owners' schedules (`/api/v1/schedules`): a real Beat fires them through RedBeat as the
owner's tasks, run by a real worker; deleting one stops it without restarting Beat; the
arguments are checked as a submission's are, and another owner's schedule is not there."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from claw_client import AsyncClawClient

from tests.service.test_usage import spent_today
from tests.support.api import ADMIN, ALICE, API_KEYS, BOB, Api
from tests.support.processes import ManagedProcess, base_env
from tests.support.waiting import async_wait_until
from workers.core import queues
from workers.core.keys import REDBEAT_PREFIX, docs_key
from workers.runtime.schedules import ScheduleStore

pytestmark = pytest.mark.slow

SCHEDULES = "/api/v1/schedules"
BEAT = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "beat"]
# Logged by RedBeat at the start of every tick (DEBUG).
TICK = "beat: Extending lock"
NOTIFY_ALICE = {"channel": "in_app", "recipient": "alice", "message": "tick"}
# An owner of this module's own: its AI budget is no other test's.
GINA = "gina-token-0123456789"


@pytest.fixture(scope="module")
def beat(redis_url: str, log_dir: Path) -> Iterator[ManagedProcess]:
    process = ManagedProcess(BEAT, base_env(redis_url, LOG_LEVEL="DEBUG"), log_dir / "beat.log")
    yield process
    process.stop()


@pytest.fixture(autouse=True)
def no_schedules_left(celery_app: Any) -> Iterator[None]:
    """Every test's schedules are gone after it: the module's Beat would fire them."""
    yield
    store = ScheduleStore(celery_app)
    for found in store.owned_by(None):
        store.delete(found["id"], found["owner"])


@pytest.fixture
async def gateway(serve_gateway: Any) -> Any:
    return await serve_gateway(api_keys=API_KEYS, schedule_min_interval=1)


@pytest.fixture
def alice(gateway: Any) -> Api:
    return gateway.api(ALICE)


@pytest.fixture
def bob(gateway: Any) -> Api:
    return gateway.api(BOB)


async def fired(
    api: Api, schedule_id: str, name: str = queues.SEND_NOTIFICATION
) -> list[dict[str, Any]]:
    """The caller's tasks (named `name`) a schedule sent, newest first."""
    status, page = await api.get("/api/v1/tasks/list", params={"name": name, "limit": "200"})
    assert status == 200, page
    return [t for t in page["tasks"] if t.get("schedule_id") == schedule_id]


def ticks_after(beat: ManagedProcess, offset: int) -> int:
    return beat.log()[offset:].count(TICK)


async def test_an_interval_schedule_fires_as_its_owners_tasks_until_deleted(
    alice: Api, bob: Api, beat: ManagedProcess, worker: Any, rclient: Any
) -> None:
    # Beat runs (it has ticked) before the schedule exists: it picks it up from Redis.
    async def ticked() -> bool:
        return ticks_after(beat, 0) >= 1

    await async_wait_until(ticked, 30, 0.05, "Beat's first tick")
    # An entry Beat cannot read is dropped, not the end of Beat (and every schedule).
    junk = f"{REDBEAT_PREFIX}:schedules:junk"
    rclient.hset(junk, "definition", "{not json")
    rclient.zadd(f"{REDBEAT_PREFIX}:schedule", {junk: 1})  # RedBeat's sorted set
    status, created = await alice.post(
        SCHEDULES, json={"task": "notifications/send", "arguments": NOTIFY_ALICE, "interval": 1}
    )
    assert status == 201, created
    schedule_id = created["id"]
    assert created["owner"] == "alice" and created["runs"] == 0
    assert created["interval"] == 1 and created["cron"] is None
    assert datetime.fromisoformat(created["next_run_at"]).utcoffset() == UTC.utcoffset(None)

    async def two_succeeded() -> list[dict[str, Any]]:
        tasks = await fired(alice, schedule_id)
        done = [t for t in tasks if t["status"] == "SUCCESS"]
        return tasks if len(done) >= 2 else []

    tasks = await async_wait_until(two_succeeded, 40, 0.2, "two firings that succeeded")
    assert {t["owner"] for t in tasks} == {"alice"}
    assert {t["queue"] for t in tasks} == {queues.NOTIFICATION_DEFAULT}
    status, shown = await alice.get(f"{SCHEDULES}/{schedule_id}")
    assert status == 200 and shown["runs"] >= 2 and shown["last_run_at"], shown

    status, _ = await alice.call("DELETE", f"{SCHEDULES}/{schedule_id}")
    assert status == 204
    assert (await alice.get(f"{SCHEDULES}/{schedule_id}"))[0] == 404
    # Beat's first tick started after the delete cannot see the schedule; a firing it
    # sent would be recorded before its next tick starts. Counted at both ticks.
    offset = len(beat.log())

    async def tick(n: int) -> bool:
        return ticks_after(beat, offset) >= n

    await async_wait_until(lambda: tick(1), 20, 0.05, "Beat's first tick after the delete")
    before = len(await fired(alice, schedule_id))
    await async_wait_until(lambda: tick(2), 20, 0.05, "Beat's second tick after the delete")
    assert len(await fired(alice, schedule_id)) == before
    assert f"Sending due task :schedules:{schedule_id}" not in beat.log()[offset:]
    assert f"schedule entry {junk} cannot be read" in beat.log() and beat.alive()
    rclient.delete(junk)


async def test_an_ai_firing_while_its_owner_is_over_budget_is_skipped_and_said_so(
    serve_gateway: Any, beat: ManagedProcess, worker: Any, rclient: Any
) -> None:
    gateway = await serve_gateway(api_keys=f"{API_KEYS},{GINA}:gina:user", schedule_min_interval=1)
    gina, admin = gateway.api(GINA), gateway.api(ADMIN)
    with spent_today(rclient, "gina", 1.0):
        status, budget = await admin.call("PUT", "/api/v1/budgets/gina", json={"cost_per_day": 0.5})
        assert status == 200 and budget["exceeded"] == ["cost_per_day"], budget
        ask = {"conversation_id": "digest", "user_message": "today's digest"}
        status, created = await gina.post(
            SCHEDULES, json={"task": "ai/generate", "arguments": ask, "interval": 1}
        )
        assert status == 201, created
        assert created["skipped"] == 0 and created["last_firing"] is None
        schedule_id = created["id"]
        # A schedule of the same owner that sends no AI task is not held back.
        notify = {"channel": "in_app", "recipient": "gina", "message": "tick"}
        status, other = await gina.post(
            SCHEDULES, json={"task": "notifications/send", "arguments": notify, "interval": 1}
        )
        assert status == 201, other

        async def shown(sid: str) -> dict[str, Any]:
            status, body = await gina.get(f"{SCHEDULES}/{sid}")
            assert status == 200, body
            return body

        async def skipped_twice() -> dict[str, Any] | None:
            body = await shown(schedule_id)
            return body if body["skipped"] >= 2 else None

        schedule = await async_wait_until(skipped_twice, 30, 0.1, "two firings skipped")
        firing = schedule["last_firing"]
        assert firing["status"] == "skipped" and firing["reason"] == "over_budget", firing
        assert firing["message"] == "skipped: over budget (cost per day)"
        assert firing["budget"]["owner"] == "gina"
        assert firing["budget"]["exceeded"] == ["cost_per_day"]
        assert firing["budget"]["cost_per_day"]["limit"] == 0.5
        assert firing["budget"]["cost_per_day"]["used"] == pytest.approx(1.0)
        assert schedule["runs"] >= schedule["skipped"] and schedule["last_run_at"]
        # Nothing was sent for it, and it is still there, due again.
        assert await fired(gina, schedule_id, queues.GENERATE_AI_RESPONSE) == []
        assert "not sent: its owner gina is over budget (cost per day)" in beat.log()

        async def notified() -> list[dict[str, Any]]:
            return await fired(gina, other["id"])

        await async_wait_until(notified, 30, 0.1, "the notification schedule's firing")
        assert (await shown(other["id"]))["skipped"] == 0

        # Within its budget again (the owner's own budget removed: unlimited), the same
        # schedule sends its next firing, and says which task it sent.
        status, budget = await admin.call("DELETE", "/api/v1/budgets/gina")
        assert status == 200 and budget["exceeded"] == [], budget

        async def sent() -> tuple[dict[str, Any], list[str]] | None:
            body = await shown(schedule_id)
            tasks = await fired(gina, schedule_id, queues.GENERATE_AI_RESPONSE)
            ids = [t["task_id"] for t in tasks]
            last = body["last_firing"]
            return (body, ids) if last["status"] == "sent" and last["task_id"] in ids else None

        schedule, ids = await async_wait_until(sent, 30, 0.1, "a firing sent")
        assert schedule["skipped"] >= 2 and "reason" not in schedule["last_firing"]
        _, task = await gina.get(f"/api/v1/tasks/status/{ids[0]}")
        assert task["owner"] == "gina" and task["schedule_id"] == schedule_id, task


async def test_a_cron_schedule_runs_next_at_its_time_in_its_time_zone(alice: Api) -> None:
    body = {"task": "notifications/send", "arguments": NOTIFY_ALICE,
            "cron": "30 9 * * *", "timezone": "Asia/Kolkata"}  # fmt: skip
    status, created = await alice.post(SCHEDULES, json=body)
    assert status == 201, created
    # 9:30 in Kolkata (UTC+5:30, no daylight saving time) is 4:00 UTC.
    next_run = datetime.fromisoformat(created["next_run_at"]).astimezone(UTC)
    assert (next_run.hour, next_run.minute, next_run.second) == (4, 0, 0), next_run
    assert created["timezone"] == "Asia/Kolkata" and created["cron"] == "30 9 * * *"
    status, listed = await alice.get(SCHEDULES)
    assert status == 200 and [s["id"] for s in listed["schedules"]] == [created["id"]]


@pytest.mark.parametrize(
    ("cron", "named"),
    [
        ("61 * * * *", "minute"),
        ("* 24 * * *", "hour"),
        ("* * 0 * *", "day_of_month"),
        ("* * * 13 *", "month_of_year"),
        ("* * * * 8", "day_of_week"),
        ("* * * *", "5 expected"),
        ("0 0 31 2 *", "never occurs"),
        ("@daily x y z w", "minute"),
    ],
)
async def test_an_invalid_cron_expression_is_a_400_naming_the_field(
    alice: Api, cron: str, named: str
) -> None:
    body = {"task": "notifications/send", "arguments": NOTIFY_ALICE, "cron": cron}
    status, refused = await alice.post(SCHEDULES, json=body)
    assert status == 400, refused
    assert set(refused["details"]) == {"cron"} and named in refused["details"]["cron"][0]


async def test_bad_timings_and_arguments_are_400s_naming_the_field(alice: Api) -> None:
    cases = [
        ({"cron": "0 9 * * *", "timezone": "Mars/Olympus"}, "timezone"),
        ({}, "cron"),
        ({"cron": "0 9 * * *", "interval": 60}, "cron"),
        ({"interval": 0.5}, "interval"),  # under SCHEDULE_MIN_INTERVAL (1 s here)
        ({"interval": 60, "task": "tasks/bulk"}, "task"),
    ]
    for timing, field in cases:
        body = {"task": "notifications/send", "arguments": NOTIFY_ALICE, **timing}
        status, refused = await alice.post(SCHEDULES, json=body)
        assert status == 400 and field in refused["details"], (timing, refused)
    # The arguments are the submission's body, validated by its schema.
    body = {"task": "ai/generate", "arguments": {"user_message": "hi", "priority": 12},
            "interval": 60}  # fmt: skip
    status, refused = await alice.post(SCHEDULES, json=body)
    assert status == 400 and set(refused["details"]["arguments"]) == {
        "conversation_id", "priority"
    }, refused  # fmt: skip
    body = {"task": "notifications/send", "interval": 60,
            "arguments": {**NOTIFY_ALICE, "countdown": 5}}  # fmt: skip
    status, refused = await alice.post(SCHEDULES, json=body)
    assert status == 400 and "countdown" in refused["details"]["arguments"], refused


async def test_the_per_owner_limit_and_the_minimum_interval_are_settings(
    serve_gateway: Any,
) -> None:
    gateway = await serve_gateway(
        api_keys=API_KEYS, schedules_per_owner=2, schedule_min_interval=120
    )
    alice, bob = gateway.api(ALICE), gateway.api(BOB)
    every_minute = {"task": "notifications/send", "arguments": NOTIFY_ALICE, "cron": "* * * * *"}
    status, refused = await alice.post(SCHEDULES, json=every_minute)
    assert status == 400 and "at least 120" in refused["details"]["cron"][0], refused
    body = {"task": "notifications/send", "arguments": NOTIFY_ALICE, "interval": 3600}
    for _ in range(2):
        assert (await alice.post(SCHEDULES, json=body))[0] == 201
    status, refused = await alice.post(SCHEDULES, json=body)
    assert status == 409 and "at most 2" in refused["error"], refused
    bobs = {**body, "arguments": {**NOTIFY_ALICE, "recipient": "bob"}}
    assert (await bob.post(SCHEDULES, json=bobs))[0] == 201  # per owner


async def test_the_same_schedule_twice_with_an_idempotency_key_is_one_schedule(
    alice: Api,
) -> None:
    body = {"task": "notifications/send", "arguments": NOTIFY_ALICE, "interval": 3600}
    key = {"Idempotency-Key": f"schedule-{uuid.uuid4()}"}
    status, first = await alice.post(SCHEDULES, json=body, headers=key)
    assert status == 201, first
    status, again = await alice.post(SCHEDULES, json=body, headers=key)
    assert status == 200 and again["id"] == first["id"], again
    assert [s["id"] for s in (await alice.get(SCHEDULES))[1]["schedules"]] == [first["id"]]
    status, refused = await alice.post(SCHEDULES, json={**body, "interval": 7200}, headers=key)
    assert status == 422, refused


async def test_another_owners_schedule_is_404_and_admin_sees_all(
    alice: Api, bob: Api, gateway: Any
) -> None:
    body = {"task": "notifications/send", "arguments": NOTIFY_ALICE, "interval": 3600}
    status, created = await alice.post(SCHEDULES, json=body)
    assert status == 201
    path = f"{SCHEDULES}/{created['id']}"
    assert (await bob.get(path))[0] == 404
    assert (await bob.call("DELETE", path))[0] == 404
    assert (await bob.get(SCHEDULES))[1] == {"schedules": []}
    assert (await bob.get(f"{SCHEDULES}/not-an-id!"))[0] == 404
    status, everyone = await gateway.api(ADMIN).get(SCHEDULES)
    assert status == 200 and [s["id"] for s in everyone["schedules"]] == [created["id"]]
    assert (await alice.get(path))[0] == 200  # still there


async def test_a_schedule_is_refused_what_its_submission_would_be(alice: Api, rclient: Any) -> None:
    rclient.hset(docs_key("bob", "kb-bob"), "doc-1", "{}")
    try:
        body = {"task": "knowledge/update", "arguments": {"kb_id": "kb-bob"}, "interval": 60}
        status, refused = await alice.post(SCHEDULES, json=body)
        assert status == 404 and "kb_id" in refused["details"], refused
        # Naming bob's namespace outright: admin keys only.
        body["arguments"] = {"kb_id": "kb-bob", "owner": "bob"}
        assert (await alice.post(SCHEDULES, json=body))[0] == 403
        # In-app notifications only to one's own inbox, as a submission.
        body = {"task": "notifications/send", "interval": 60,
                "arguments": {**NOTIFY_ALICE, "recipient": "bob"}}  # fmt: skip
        assert (await alice.post(SCHEDULES, json=body))[0] == 403
        assert (await alice.get(SCHEDULES))[1] == {"schedules": []}
    finally:
        rclient.delete(docs_key("bob", "kb-bob"))


async def test_schedules_need_an_api_key(gateway: Any) -> None:
    anonymous = gateway.api(None)
    body = {"task": "notifications/send", "arguments": NOTIFY_ALICE, "interval": 60}
    assert (await anonymous.post(SCHEDULES, json=body))[0] == 401
    assert (await anonymous.get(SCHEDULES))[0] == 401
    assert (await anonymous.get(f"{SCHEDULES}/x"))[0] == 401
    assert (await anonymous.call("DELETE", f"{SCHEDULES}/x"))[0] == 401


async def test_the_python_client_creates_lists_shows_and_deletes_schedules(gateway: Any) -> None:
    async with AsyncClawClient(gateway.base_url, ALICE) as claw:
        created = await claw.create_schedule(
            "notifications/send", NOTIFY_ALICE, cron="0 9 * * mon-fri", timezone="Europe/Paris"
        )
        assert (await claw.schedules())["schedules"] == [await claw.schedule(created["id"])]
        await claw.delete_schedule(created["id"])
        assert (await claw.schedules())["schedules"] == []
