"""The client's calls on many tasks at once, against the real gateway and worker (and a real
Beat): a batch's items run and its progress, paging and webhook say so; cancelling a batch
cancels its items not started; a bulk cancel or retry acts on the tasks its filter selects
and on no other (another owner's with the same tag untouched); a schedule fires as its
owner's task until deleted. Each error answer raises its typed exception with the API's
body."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from claw_client import AsyncClawClient, BadRequest, ClawClient, Conflict, NotFound, verify_webhook

from tests.support.api import ADMIN, BOB
from tests.support.processes import ManagedProcess, base_env
from tests.support.waiting import async_wait_until, wait_until
from tests.support.webhook_server import TaskWebhookReceiver

BEAT = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "beat"]
# Logged by RedBeat at the start of every tick (DEBUG).
TICK = "beat: Extending lock"
NOTIFY = "notifications/send"
LATER = 600  # a countdown: the task stays PENDING for the test's length


def tag() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


def note(recipient: str = "alice", **options: Any) -> dict[str, Any]:
    """A notification's body (to the owner's own in-app inbox)."""
    return {"channel": "in_app", "recipient": recipient, "message": "hi", **options}


@pytest.fixture(scope="module", autouse=True)
def beat(client_redis_url: str, log_dir: Path) -> Iterator[ManagedProcess]:
    """Beat on the package's database, ticking at least every second (so a new schedule is
    seen soon). Started with the module, not waited for: it starts while the module's
    other tests run, and the schedule test (after them) waits for its ticks."""
    argv = [*BEAT, "--max-interval", "1"]
    env = base_env(client_redis_url, LOG_LEVEL="DEBUG")
    process = ManagedProcess(argv, env, log_dir / "beat-client.log")
    yield process
    process.stop()


@pytest.fixture(autouse=True)
def no_schedules_left(gateway) -> Iterator[None]:
    """Every test's schedules are gone after it (the module's Beat would fire them)."""
    yield
    with ClawClient(gateway.base_url, ADMIN) as admin:
        for found in admin.schedules()["schedules"]:
            admin.delete_schedule(found["id"])


# --- batches ----------------------------------------------------------------------------


def test_a_batch_runs_its_items_reports_them_paged_and_calls_its_webhook(
    alice, bob, receiver: TaskWebhookReceiver
) -> None:
    items = [(NOTIFY, note(message=f"item {n}")) for n in range(3)]
    items.append(("ai/generate", {"conversation_id": "c-batch", "user_message": "in a batch"}))
    hook = f"batch-{uuid.uuid4().hex[:8]}"
    submitted = alice.submit_batch(items, webhook=f"{receiver.base_url}/ok/{hook}")
    assert submitted["status"] == "PENDING" and submitted["total"] == 4, submitted
    batch_id = submitted["batch_id"]
    # The batch is a task of its owner: it ends SUCCESS once every item has ended.
    assert alice.wait(batch_id, timeout=20)["status"] == "SUCCESS"
    done = alice.batch(batch_id)
    assert (done["status"], done["total"], done["published"], done["ended"]) == (
        "SUCCESS", 4, 4, 4,
    )  # fmt: skip
    assert done["counts"] == {"SUCCESS": 4} and done["cancelled"] is False
    assert done["next_cursor"] is None and done["finished_at"]
    ids = {f"{batch_id}-{n}" for n in range(4)}
    assert {i["task_id"] for i in done["items"]} == ids
    assert {(i["status"], i["batch_id"], i["owner"]) for i in done["items"]} == {
        ("SUCCESS", batch_id, "alice")
    }
    # The items really ran: each one's result is its task's.
    reply = alice.status(f"{batch_id}-3")
    assert reply["name"] == "generate_ai_response"
    assert reply["result"]["response"].startswith("Echo: in a batch")
    # Paged: two and two, every item once; by state.
    first = alice.batch(batch_id, limit=2)
    assert len(first["items"]) == 2 and first["next_cursor"]
    rest = alice.batch(batch_id, limit=2, cursor=first["next_cursor"])
    assert {i["task_id"] for i in first["items"] + rest["items"]} == ids
    assert alice.batch(batch_id, status="FAILURE")["items"] == []
    # The webhook, once every item ended, signed with the owner's secret.
    [delivery] = wait_until(lambda: receiver.received[hook], 10, what="the batch's webhook")
    payload = verify_webhook(
        alice.webhook_secret()["secret"], delivery["headers"], delivery["body"]
    )
    assert payload["type"] == "task.completed" and payload["data"]["task_id"] == batch_id
    assert payload["data"]["status"] == "SUCCESS"

    # Another owner's batch is not there; a finished one cannot be cancelled.
    with pytest.raises(NotFound) as foreign:
        bob.batch(batch_id)
    assert foreign.value.status == 404 and foreign.value.body == {"error": "no such task"}
    with pytest.raises(NotFound):
        bob.cancel_batch(batch_id)
    with pytest.raises(NotFound):
        alice.batch(str(uuid.uuid4()))
    with pytest.raises(Conflict) as finished:
        alice.cancel_batch(batch_id)
    assert finished.value.status == 409 and "already finished" in finished.value.message


def test_a_batch_with_a_bad_line_is_refused_whole_naming_the_line(alice) -> None:
    mine = tag()
    bad = [(NOTIFY, note(tags=[mine])), (NOTIFY, note(channel="pigeon")), (NOTIFY, note())]
    with pytest.raises(BadRequest) as refused:
        alice.submit_batch(bad)
    assert refused.value.status == 400
    assert refused.value.message == "invalid batch: nothing was submitted"
    assert set(refused.value.details) == {"line 2"} and "channel" in refused.value.details["line 2"]
    assert refused.value.body["details"] == refused.value.details
    with pytest.raises(BadRequest, match="empty batch"):
        alice.submit_batch([])
    with pytest.raises(ValueError, match="unknown submission"):  # refused before sending
        alice.submit_batch([(NOTIFY, note()), ("ai/nothing", {})])
    assert alice.list(tag=mine)["tasks"] == []  # not even the good lines


def test_cancelling_a_batch_cancels_its_items_not_started(alice) -> None:
    submitted = alice.submit_batch([(NOTIFY, note(countdown=LATER)) for _ in range(3)])
    batch_id = submitted["batch_id"]
    wait_until(lambda: alice.batch(batch_id)["published"] == 3, 10, what="3 items published")
    cancelling = alice.cancel_batch(batch_id)
    assert cancelling["batch_id"] == batch_id and cancelling["status"] == "CANCELLING"
    bulk = alice.wait(cancelling["bulk_task_id"], timeout=20)
    assert bulk["status"] == "SUCCESS" and bulk["result"]["done"] == 3, bulk
    assert alice.wait(batch_id, timeout=20)["status"] == "REVOKED"
    cancelled = alice.batch(batch_id)
    assert cancelled["cancelled"] is True and cancelled["counts"] == {"REVOKED": 3}
    assert {i["status"] for i in cancelled["items"]} == {"REVOKED"}


# --- bulk cancel and retry --------------------------------------------------------------


def test_bulk_cancel_and_retry_act_on_the_owners_matching_tasks_and_no_other(alice, bob) -> None:
    mine, other = tag(), tag()
    pending = [alice.notify("in_app", "alice", f"n{n}", tags=[mine], metadata={"run": mine},
                            countdown=LATER)["task_id"] for n in range(3)]  # fmt: skip
    finished = alice.submit(NOTIFY, note(tags=[mine]), wait=10)
    assert finished["status"] == "SUCCESS"
    untagged = alice.notify("in_app", "alice", "other", tags=[other], countdown=LATER)["task_id"]
    bobs = [bob.notify("in_app", "bob", "bob's", tags=[mine], countdown=LATER)["task_id"]
            for _ in range(2)]  # fmt: skip

    counted = alice.bulk_cancel(tag=mine, dry_run=True)
    assert counted == {"action": "cancel", "dry_run": True, "matched": 4, "truncated": False}
    assert alice.bulk_cancel(tag=mine, status="PENDING", dry_run=True)["matched"] == 3
    assert alice.bulk_cancel(metadata=f"run={mine}", dry_run=True)["matched"] == 3
    assert {t["task_id"] for t in alice.iter_tasks(metadata=f"run={mine}", limit=2)} == set(pending)
    # A user key's bulk action is on its own tasks, whatever `owner` it names.
    submitted = alice.bulk_cancel(tag=mine, owner="bob")
    assert submitted["status"] == "PENDING" and submitted["task_id"]
    bulk = alice.wait(submitted["task_id"], timeout=20)
    assert bulk["name"] == "bulk_action" and bulk["owner"] == "alice"
    assert bulk["result"] == {
        "action": "cancel", "matched": 4, "done": 3, "skipped": {"finished": 1},
        "truncated": False,
    }  # fmt: skip
    assert {alice.status(t)["status"] for t in pending} == {"REVOKED"}
    assert alice.status(finished["task_id"])["status"] == "SUCCESS"
    assert alice.status(untagged)["status"] == "PENDING"
    assert {bob.status(t)["status"] for t in bobs} == {"PENDING"}

    # Retry: the cancelled ones, again as new tasks that run (no countdown is kept).
    assert alice.bulk_retry(tag=mine, status="REVOKED", dry_run=True)["matched"] == 3
    retried = alice.wait(alice.bulk_retry(tag=mine, status="REVOKED")["task_id"], timeout=20)
    assert retried["result"]["done"] == 3 and retried["result"]["skipped"] == {}

    def reruns() -> list[dict[str, Any]]:
        found = alice.list(tag=mine, status="SUCCESS", limit=50)["tasks"]
        return [t for t in found if t.get("retried_from")]

    again = wait_until(lambda: len(reruns()) == 3 and reruns(), 20, what="3 retries that ran")
    assert {t["retried_from"] for t in again} == set(pending)
    assert {t["metadata"]["run"] for t in again} == {mine}  # kept by a retry
    every = [t["task_id"] for t in alice.iter_tasks(tag=mine, limit=2)]
    assert len(every) == 7 and set(every) >= {*pending, finished["task_id"]}
    twice = alice.wait(alice.bulk_retry(tag=mine, status="REVOKED")["task_id"], timeout=20)
    assert twice["result"]["done"] == 0 and twice["result"]["skipped"] == {"retried_already": 3}
    assert {bob.status(t)["status"] for t in bobs} == {"PENDING"}

    with pytest.raises(BadRequest) as no_filter:
        alice.bulk_cancel(dry_run=True)
    assert no_filter.value.status == 400 and set(no_filter.value.details) == {"status"}
    assert no_filter.value.body == {"error": "give at least one filter",
                                    "details": no_filter.value.details}  # fmt: skip
    with pytest.raises(BadRequest) as bad_state:
        alice.bulk_retry(status="NOPE")
    assert "status" in bad_state.value.details
    # Bob's own bulk cancel takes his; then nothing of the tag is left pending.
    assert bob.wait(bob.bulk_cancel(tag=mine)["task_id"], timeout=20)["result"]["done"] == 2
    alice.cancel(untagged)


# --- schedules --------------------------------------------------------------------------


def ticks_after(beat: ManagedProcess, offset: int) -> int:
    assert beat.alive(), beat.log()[-3000:]
    return beat.log()[offset:].count(TICK)


def fired(client: ClawClient, schedule_id: str) -> list[dict[str, Any]]:
    """The caller's notifications the schedule sent, newest first."""
    tasks = client.list(name="send_notification", limit=200)["tasks"]
    return [t for t in tasks if t.get("schedule_id") == schedule_id]


def ran(client: ClawClient, schedule_id: str) -> list[dict[str, Any]]:
    return [t for t in fired(client, schedule_id) if t["status"] == "SUCCESS"]


def test_a_schedule_fires_as_its_owners_task_until_deleted(
    alice, bob, admin, beat: ManagedProcess
) -> None:
    # Refused, each naming its field: faster than SCHEDULE_MIN_INTERVAL (0.5 s here), a
    # cron hour that does not exist, a submission's own options; an unknown kind, before
    # anything is sent.
    with pytest.raises(BadRequest) as too_often:
        alice.create_schedule(NOTIFY, note(), interval=0.2)
    assert too_often.value.status == 400 and set(too_often.value.details) == {"interval"}
    assert "at least 0.5 s apart" in too_often.value.details["interval"][0]
    with pytest.raises(BadRequest) as bad_cron:
        alice.create_schedule(NOTIFY, note(), cron="0 24 * * *")
    assert "hour '24'" in bad_cron.value.details["cron"][0]
    with pytest.raises(BadRequest) as options:
        alice.create_schedule(NOTIFY, note(countdown=5), interval=60)
    assert options.value.details == {"arguments": {"countdown": ["not available for a schedule"]}}
    with pytest.raises(ValueError, match="unknown submission"):
        alice.create_schedule("ai/nothing", {}, interval=60)

    # A cron schedule, read in its time zone (Beat does not fire it during the test).
    daily = alice.create_schedule(NOTIFY, note(), cron="0 9 * * *", timezone="Europe/Paris")
    assert daily["cron"] == "0 9 * * *" and daily["timezone"] == "Europe/Paris"
    next_run = datetime.fromisoformat(daily["next_run_at"]).astimezone(ZoneInfo("Europe/Paris"))
    assert (next_run.hour, next_run.minute) == (9, 0)

    # Alice's and bob's, as often as the API allows.
    every = alice.create_schedule(NOTIFY, note(message="tick"), interval=0.5)
    assert every["owner"] == "alice" and every["runs"] == 0 and every["interval"] == 0.5
    assert every["cron"] is None and every["task"] == NOTIFY
    bobs = bob.create_schedule(NOTIFY, note("bob", message="tock"), interval=0.5)
    assert alice.schedule(every["id"]) == every
    assert [s["id"] for s in alice.schedules()["schedules"]] == [daily["id"], every["id"]]
    # Another owner's schedules are not there for bob; an admin key lists everyone's.
    assert [s["id"] for s in bob.schedules()["schedules"]] == [bobs["id"]]
    with pytest.raises(NotFound) as foreign:
        bob.schedule(every["id"])
    assert foreign.value.status == 404 and foreign.value.body == {"error": "schedule not found"}
    with pytest.raises(NotFound):
        bob.delete_schedule(every["id"])
    everyone = {s["id"] for s in admin.schedules()["schedules"]}
    assert everyone == {daily["id"], every["id"], bobs["id"]}

    # It fires: alice's notification, sent by the schedule, run by the worker.
    ticked = wait_until(lambda: ran(alice, every["id"]), 20, what="a firing that ran")
    assert {(t["owner"], t["queue"]) for t in ticked} == {("alice", "notification_default")}
    shown = alice.schedule(every["id"])
    assert shown["runs"] >= 1 and shown["last_run_at"], shown
    assert shown["last_firing"]["status"] == "sent"
    assert shown["last_firing"]["task_id"] in {t["task_id"] for t in fired(alice, every["id"])}

    assert alice.delete_schedule(every["id"]) is None
    with pytest.raises(NotFound):
        alice.schedule(every["id"])
    assert [s["id"] for s in alice.schedules()["schedules"]] == [daily["id"]]
    # Beat's first tick started after the delete cannot see it; a firing it sent before is
    # recorded before its next tick starts. Counted at both: no firing after the delete.
    # Bob's schedule still fires (and keeps Beat ticking every 0.5 s).
    offset = len(beat.log())
    wait_until(lambda: ticks_after(beat, offset) >= 1, 10, what="a tick after the delete")
    before = len(fired(alice, every["id"]))
    bob_before = {t["task_id"] for t in fired(bob, bobs["id"])}
    wait_until(lambda: ticks_after(beat, offset) >= 2, 10, what="a second tick")
    assert len(fired(alice, every["id"])) == before
    log = beat.log()
    after_delete = log.index(TICK, offset)  # a tick running at the delete may log its send
    assert f"Sending due task :schedules:{every['id']}" not in log[after_delete:]
    # Bob's fires again and again, as bob's tasks.
    wait_until(lambda: {t["task_id"] for t in ran(bob, bobs["id"])} - bob_before, 10,
               what="bob's schedule firing after alice's delete")  # fmt: skip
    assert {t["owner"] for t in fired(bob, bobs["id"])} == {"bob"}
    assert bob.schedule(bobs["id"])["runs"] >= 2
    bob.delete_schedule(bobs["id"])
    alice.delete_schedule(daily["id"])
    assert admin.schedules() == {"schedules": []}
    beat.terminate()  # no other test needs it: it stops while the next ones run


# --- the async client -------------------------------------------------------------------


@pytest.fixture
async def async_bob(gateway) -> AsyncIterator[AsyncClawClient]:
    async with AsyncClawClient(gateway.base_url, BOB) as client:
        yield client


async def test_the_async_client_has_the_same_batch_bulk_and_schedule_calls(
    async_alice, async_bob
) -> None:
    submitted = await async_alice.submit_batch([(NOTIFY, note(message=f"a{n}")) for n in range(2)])
    batch_id = submitted["batch_id"]
    assert (await async_alice.wait(batch_id, timeout=20))["status"] == "SUCCESS"
    done = await async_alice.batch(batch_id, limit=1)
    assert done["counts"] == {"SUCCESS": 2} and len(done["items"]) == 1 and done["next_cursor"]
    with pytest.raises(Conflict):
        await async_alice.cancel_batch(batch_id)
    later = await async_alice.submit_batch([(NOTIFY, note(countdown=LATER))])

    async def published() -> bool:
        return (await async_alice.batch(later["batch_id"]))["published"] == 1

    await async_wait_until(published, 10, what="the item published")
    cancelling = await async_alice.cancel_batch(later["batch_id"])
    assert cancelling["status"] == "CANCELLING"
    assert (await async_alice.wait(later["batch_id"], timeout=20))["status"] == "REVOKED"

    mine = tag()
    pending = await async_alice.notify("in_app", "alice", "x", tags=[mine], countdown=LATER)
    vectorized = await async_alice.vectorize("kb-async", "d1", "Text.", tags=[mine],
                                             countdown=LATER)  # fmt: skip
    bobs = await async_bob.notify("in_app", "bob", "y", tags=[mine], countdown=LATER)
    assert (await async_alice.bulk_cancel(tag=mine, dry_run=True))["matched"] == 2
    cancelled = await async_alice.wait((await async_alice.bulk_cancel(tag=mine))["task_id"])
    assert cancelled["result"]["done"] == 2
    for task in (pending, vectorized):
        assert (await async_alice.status(task["task_id"]))["status"] == "REVOKED"
    assert (await async_bob.status(bobs["task_id"]))["status"] == "PENDING"
    assert (await async_alice.bulk_retry(tag=mine, dry_run=True))["matched"] == 2
    retried = await async_alice.wait((await async_alice.bulk_retry(tag=mine))["task_id"])
    assert retried["result"]["done"] == 2
    with pytest.raises(BadRequest):
        await async_alice.bulk_retry()
    await async_bob.cancel(bobs["task_id"])

    created = await async_alice.create_schedule(NOTIFY, note(), interval=3600)
    assert (await async_alice.schedule(created["id"]))["runs"] == 0
    assert [s["id"] for s in (await async_alice.schedules())["schedules"]] == [created["id"]]
    with pytest.raises(NotFound):
        await async_bob.delete_schedule(created["id"])
    with pytest.raises(BadRequest) as bad_cron:
        await async_alice.create_schedule(NOTIFY, note(), cron="every day")
    assert bad_cron.value.status == 400 and "cron" in bad_cron.value.details
    assert await async_alice.delete_schedule(created["id"]) is None
    with pytest.raises(NotFound):
        await async_alice.schedule(created["id"])
