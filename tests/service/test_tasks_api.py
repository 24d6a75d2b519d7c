"""The task REST API against the real gateway, real workers and the shared Redis."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta

import pytest
from claw_client import AsyncClawClient

from tests.support.waiting import async_wait_until
from workers.core.keys import HEALTH_REPORT_KEY, SYSTEM_COUNTS_KEY
from workers.taskindex.index import TaskIndex

AI = "/api/v1/tasks/ai/generate"
T = "/api/v1/tasks"


def ai_body(**extra):
    return {"conversation_id": f"conv-{uuid.uuid4().hex[:8]}", "user_message": "hi", **extra}


async def wait_status(api, task_id, states, timeout=20.0):
    async def reached():
        status, body = await api.get(f"{T}/status/{task_id}")
        return body if status == 200 and body["status"] in states else None

    return await async_wait_until(reached, timeout, 0.05, f"{task_id} in {states}")


async def test_submit_then_status_carries_the_seed_fields_and_more(alice, worker) -> None:
    status, body = await alice.post(AI, json=ai_body(priority=7))
    assert status == 202 and body["status"] == "PENDING"
    done = await wait_status(alice, body["task_id"], {"SUCCESS"})
    for field in ("task_id", "status", "result", "error", "date_done", "runtime"):
        assert field in done
    assert done["result"]["response"] and done["error"] is None
    assert done["runtime"] is not None and done["runtime"] >= 0
    assert done["name"] == "generate_ai_response" and done["queue"] == "ai_high_priority"
    assert done["priority"] == 7 and done["owner"] == "alice"
    assert done["worker"].startswith("shared-")
    assert done["submitted_at"] <= done["started_at"] <= done["finished_at"]
    assert done["kwargs"]["user_message"] == "hi"
    assert "traceback" not in done or done["traceback"] is None


async def test_unknown_task_id_is_404_not_pending(admin) -> None:
    status, body = await admin.get(f"{T}/status/{uuid.uuid4()}")
    assert status == 404 and body["error"]


async def test_missing_or_wrong_key_is_401(anonymous, http, secured_gateway) -> None:
    for path in (f"{T}/list", f"{T}/stats", f"{T}/status/x", f"{T}/workers"):
        status, body = await anonymous.get(path)
        assert status == 401 and body["error"]
    from tests.support.api import Api

    wrong = Api(http, secured_gateway.base_url, "not-a-key")
    assert (await wrong.post(AI, json=ai_body()))[0] == 401
    # health stays open
    assert (await anonymous.get("/healthz"))[0] == 200


async def test_users_only_see_their_own_tasks(alice, bob, admin, worker) -> None:
    _, mine = await alice.post(AI, json=ai_body())
    await wait_status(alice, mine["task_id"], {"SUCCESS"})
    # bob cannot see, cancel or retry it, and cannot tell it exists
    assert (await bob.get(f"{T}/status/{mine['task_id']}"))[0] == 404
    assert (await bob.post(f"{T}/cancel/{mine['task_id']}"))[0] == 404
    assert (await bob.post(f"{T}/retry/{mine['task_id']}"))[0] == 404
    _, page = await bob.get(f"{T}/list", params={"limit": 500})
    assert all(t["owner"] == "bob" for t in page["tasks"])
    assert mine["task_id"] not in {t["task_id"] for t in page["tasks"]}
    # the admin sees it
    assert (await admin.get(f"{T}/status/{mine['task_id']}"))[0] == 200
    # users cannot reach worker control
    assert (await alice.get(f"{T}/workers"))[0] == 403
    assert (await alice.post(f"{T}/workers/shutdown", params={"all": "true"}))[0] == 403


async def test_list_filters_paginates_newest_first_and_is_stable(alice, worker) -> None:
    ids = []
    for _ in range(5):
        _, body = await alice.post(AI, json=ai_body())
        ids.append(body["task_id"])
    for task_id in ids:
        await wait_status(alice, task_id, {"SUCCESS"})
    _, first = await alice.get(f"{T}/list", params={"limit": 2, "status": "SUCCESS"})
    assert [t["task_id"] for t in first["tasks"]] == ids[::-1][:2]
    assert first["next_cursor"]
    # a new task arriving does not shift the next page
    _, extra = await alice.post(AI, json=ai_body())
    _, second = await alice.get(
        f"{T}/list", params={"limit": 2, "status": "SUCCESS", "cursor": first["next_cursor"]}
    )
    assert [t["task_id"] for t in second["tasks"]] == ids[::-1][2:4]
    _, by_name = await alice.get(
        f"{T}/list", params={"name": "generate_ai_response", "queue": "ai_high_priority"}
    )
    assert {t["task_id"] for t in by_name["tasks"]} >= set(ids)
    _, none = await alice.get(f"{T}/list", params={"queue": "no_such_queue"})
    assert none["tasks"] == [] and none["next_cursor"] is None
    await wait_status(alice, extra["task_id"], {"SUCCESS"})


@pytest.mark.parametrize(
    ("params", "field"),
    [({"limit": 501}, "limit"), ({"limit": 0}, "limit"), ({"status": "DONE"}, "status"),
     ({"cursor": "abc"}, "cursor"), ({"bogus": 1}, "bogus")],
)  # fmt: skip
async def test_bad_list_query_is_400_naming_the_field(alice, params, field) -> None:
    status, body = await alice.get(f"{T}/list", params=params)
    assert status == 400 and field in body["details"]


async def test_stats_has_the_seed_fields_and_counts_follow_tasks(alice, admin, worker) -> None:
    _, before = await alice.get(f"{T}/stats")
    for field in ("total_tasks", "pending", "started", "success", "failure", "retry",
                  "workers", "revoked"):  # fmt: skip
        assert field in before
    # Queue depths and everyone's throughput are operators' data.
    assert "queues" not in before and "tasks_per_minute" not in before
    _, body = await alice.post(AI, json=ai_body())
    await wait_status(alice, body["task_id"], {"SUCCESS"})
    _, after = await alice.get(f"{T}/stats")
    assert after["total_tasks"] == before["total_tasks"] + 1
    assert after["success"] == before["success"] + 1
    assert after["workers"] >= 1
    _, everyone = await admin.get(f"{T}/stats")
    assert everyone["total_tasks"] >= after["total_tasks"]
    assert set(everyone["queues"]) == {
        "ai_high_priority",
        "knowledge_default",
        "notification_default",
        "default",
    }
    assert sum(m["finished"] for m in everyone["tasks_per_minute"]) >= 1


async def test_task_published_by_plain_celery_appears_in_list_and_status(
    admin, celery_app, worker
) -> None:
    result = celery_app.send_task(
        "generate_ai_response", kwargs={"conversation_id": "plain", "user_message": "x"}
    )
    done = await wait_status(admin, result.id, {"SUCCESS"})
    assert done["name"] == "generate_ai_response"
    _, page = await admin.get(f"{T}/list", params={"limit": 20})
    assert result.id in {t["task_id"] for t in page["tasks"]}


async def test_retry_of_a_failed_task_links_both_records(admin, celery_app, worker) -> None:
    failed = celery_app.send_task("vectorize_document", kwargs={"document_id": 1})  # bad args
    await wait_status(admin, failed.id, {"FAILURE"})
    status, body = await admin.post(f"{T}/retry/{failed.id}")
    assert status == 202 and body["retried_from"] == failed.id
    new = await wait_status(admin, body["task_id"], {"FAILURE", "SUCCESS"})
    assert new["retried_from"] == failed.id
    _, old = await admin.get(f"{T}/status/{failed.id}")
    assert old["retried_as"] == body["task_id"]
    # once only
    assert (await admin.post(f"{T}/retry/{failed.id}"))[0] == 409


async def test_retry_of_a_successful_task_is_409(alice, worker) -> None:
    _, body = await alice.post(AI, json=ai_body())
    await wait_status(alice, body["task_id"], {"SUCCESS"})
    status, err = await alice.post(f"{T}/retry/{body['task_id']}")
    assert status == 409 and "SUCCESS" in err["error"]
    status, err = await alice.post(f"{T}/cancel/{body['task_id']}")
    assert status == 409


async def test_wait_returns_the_finished_status(alice, worker) -> None:
    status, body = await alice.post(AI, json=ai_body(), params={"wait": 20})
    assert status == 200
    assert body["status"] == "SUCCESS" and body["result"]["conversation_id"]


async def test_wait_that_runs_out_answers_202(alice, worker) -> None:
    status, body = await alice.post(AI, json=ai_body(countdown=30), params={"wait": 0.3})
    assert status == 202 and body["status"] == "PENDING"
    assert (await alice.post(f"{T}/cancel/{body['task_id']}"))[0] == 200


async def test_idempotency_key_returns_the_first_task(alice, bob) -> None:
    key = {"Idempotency-Key": uuid.uuid4().hex}
    body = ai_body(countdown=60)
    s1, first = await alice.post(AI, json=body, headers=key)
    s2, again = await alice.post(AI, json=body, headers=key)
    assert s1 == s2 == 202 and first["task_id"] == again["task_id"]
    # The key names one request: another body (or endpoint) with it is 422, not the first.
    s3, other_body = await alice.post(AI, json={**body, "countdown": 61}, headers=key)
    assert s3 == 422 and "Idempotency-Key" in other_body["details"]
    note = {"channel": "in_app", "recipient": "alice", "message": "m"}
    s4, body4 = await alice.post(f"{T}/notifications/send", headers=key, json=note)
    assert s4 == 422, body4
    # the same key from another owner is another submission
    _, other = await bob.post(AI, json=ai_body(countdown=60), headers=key)
    assert other["task_id"] != first["task_id"]
    for api, task in ((alice, first), (bob, other)):
        assert (await api.post(f"{T}/cancel/{task['task_id']}"))[0] == 200


async def test_a_202_names_its_status_url_in_location(alice) -> None:
    async with AsyncClawClient(alice.base_url, alice.token) as claw:
        submitted = await claw.request("POST", AI, json=ai_body(countdown=60))
        assert submitted.status_code == 202
        status = await claw.request("GET", submitted.headers["Location"])
        assert status.json()["task_id"] == submitted.json()["task_id"]
        await claw.cancel(submitted.json()["task_id"])
        retried = await claw.request("POST", f"{T}/retry/{submitted.json()['task_id']}")
        assert retried.status_code == 202
        assert retried.headers["Location"] == f"{T}/status/{retried.json()['task_id']}"
        # (The retry may already have run: its outcome does not matter here.)
        await claw.request("POST", f"{T}/cancel/{retried.json()['task_id']}")


async def test_terminating_a_running_task_answers_202_naming_its_status_url(admin, rclient) -> None:
    """A task a worker runs (as the index has it): `terminate=true` answers 202 REVOKING,
    and `Location` is the status URL to poll for the outcome."""
    task_id = str(uuid.uuid4())
    index = TaskIndex(rclient)
    index.record(task_id, "PENDING", 0, name="generate_ai_response", queue="ai_high_priority",
                 owner="ops")  # fmt: skip
    index.record(task_id, "STARTED", 0, worker="elsewhere@host")
    try:
        async with AsyncClawClient(admin.base_url, admin.token) as claw:
            answer = await claw.request(
                "POST", f"{T}/cancel/{task_id}", params={"terminate": "true"}
            )
            assert answer.status_code == 202 and answer.json()["status"] == "REVOKING"
            assert answer.headers["Location"] == f"{T}/status/{task_id}"
            polled = await claw.request("GET", answer.headers["Location"])
            assert polled.status_code == 200 and polled.json()["task_id"] == task_id
    finally:  # what the worker records once the task is terminated
        index.record(task_id, "REVOKED", 0, error_type="Terminated", error_message="terminated")


async def test_list_name_filter_matches_a_part_of_a_name_in_any_case(alice) -> None:
    """`?name=` with no task of that exact name matches a part of names (a prefix, any
    substring), case-insensitively; it combines with the other filters."""
    _, body = await alice.post(AI, json=ai_body(countdown=300))
    task_id = body["task_id"]
    try:
        for part in ("generate", "GENERATE_AI", "ai_resp", "Response"):
            status, page = await alice.get(f"{T}/list", params={"name": part, "limit": 500})
            assert status == 200, page
            assert task_id in {t["task_id"] for t in page["tasks"]}, part
            assert all(part.lower() in t["name"] for t in page["tasks"]), part
        _, pending = await alice.get(f"{T}/list", params={"name": "ai_resp", "status": "PENDING"})
        assert task_id in {t["task_id"] for t in pending["tasks"]}
        _, done = await alice.get(f"{T}/list", params={"name": "ai_resp", "status": "SUCCESS"})
        assert task_id not in {t["task_id"] for t in done["tasks"]}
        _, none = await alice.get(f"{T}/list", params={"name": "no_such_part_of_a_name"})
        assert none["tasks"] == [] and none["next_cursor"] is None
    finally:
        await alice.post(f"{T}/cancel/{task_id}")


async def test_openapi_document_is_generated_from_the_schemas(admin) -> None:
    status, spec = await admin.get("/api/v1/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.")
    assert "/api/v1/tasks/status/{task_id}" in spec["paths"]
    schemas = spec["components"]["schemas"]
    assert {"task_id", "status", "result", "error", "date_done", "runtime"} <= set(
        schemas["TaskStatusResponse"]["properties"]
    )


async def test_metrics_are_prometheus_text(admin, worker) -> None:
    await admin.get(f"{T}/stats")
    status, text = await admin.get("/metrics")
    assert status == 200
    assert 'claw_tasks{state="SUCCESS"}' in text
    assert 'claw_queue_depth{queue="ai_high_priority"}' in text
    assert "claw_api_request_seconds_bucket" in text
    assert "claw_websocket_clients" in text


async def test_malformed_inputs_are_clear_4xx(alice) -> None:
    status, body = await alice.post(AI, data="{", headers={"Content-Type": "application/json"})
    assert status == 400
    status, body = await alice.post(AI, json=[1, 2])
    assert status == 400
    status, body = await alice.post(AI, json=ai_body(unknown_field=1))
    assert status == 400 and "unknown_field" in body["details"]
    status, body = await alice.post(AI, params={"wait": 61}, json=ai_body())
    assert status == 400 and "wait" in body["details"]
    status, body = await alice.post(AI, json=ai_body(), headers={"Idempotency-Key": "x" * 300})
    assert status == 400
    status, body = await alice.get(f"{T}/status/{uuid.uuid4()}", params={})
    assert status == 404
    status, body = await alice.call("PUT", f"{T}/list")
    assert status == 405 and body["error"]


async def test_a_health_report_is_there_before_beats_first_run(admin, alice, rclient, worker):
    """`check_task_health` runs every 30 minutes; before its first run the gateway makes the
    report with the same check (and stores it), instead of answering 404."""
    rclient.delete(HEALTH_REPORT_KEY)
    status, report = await admin.get(f"{T}/health")
    assert status == 200 and report["age_seconds"] < 5
    assert worker.hostname in report["live_workers"] and "queue_depths" in report
    stored = json.loads(rclient.get(HEALTH_REPORT_KEY))["checked_at"]
    assert datetime.fromisoformat(report["checked_at"]).timestamp() == pytest.approx(stored)
    assert (await alice.get(f"{T}/health"))[0] == 403


async def test_each_operation_lists_the_errors_it_can_answer_with_examples(admin) -> None:
    _, spec = await admin.get("/api/v1/openapi.json")
    paths = spec["paths"]
    assert set(paths["/healthz"]["get"]["responses"]) == {"200", "400", "503"}
    cancel = paths["/api/v1/tasks/cancel/{task_id}"]["post"]["responses"]
    assert {"404", "409"} <= set(cancel) and not {"413", "415", "422"} & set(cancel)
    assert "409" not in paths["/api/v1/tasks/list"]["get"]["responses"]
    assert "422" in paths["/api/v1/tasks/ai/generate"]["post"]["responses"]
    for ops in paths.values():
        for op in ops.values():
            for code, answer in op["responses"].items():
                if code.startswith(("4", "5")):
                    assert answer["content"]["application/json"]["example"]["error"], code


async def test_housekeeping_tasks_stay_out_of_admins_default_counts(
    admin, celery_app, rclient, worker
) -> None:
    chore = celery_app.send_task("check_task_health")
    await wait_status(admin, chore.id, {"SUCCESS"})
    _, default = await admin.get(f"{T}/stats")
    _, everything = await admin.get(f"{T}/stats", params={"system": "true"})
    housekeeping = int(rclient.hget(SYSTEM_COUNTS_KEY, "SUCCESS") or 0)
    assert housekeeping >= 1
    assert everything["success"] - default["success"] == housekeeping
    _, listed = await admin.get(f"{T}/list", params={"limit": 200})
    assert chore.id not in {t["task_id"] for t in listed["tasks"]}
    _, with_system = await admin.get(f"{T}/list", params={"limit": 200, "system": "true"})
    assert chore.id in {t["task_id"] for t in with_system["tasks"]}


async def test_every_time_the_api_answers_is_iso_8601_utc(alice, admin, worker) -> None:
    def utc(value: str) -> bool:
        return datetime.fromisoformat(value).utcoffset() == timedelta(0)

    status, body = await alice.post(AI, json=ai_body(), params={"wait": 20})
    assert status == 200 and body["status"] == "SUCCESS"
    assert all(utc(body[f]) for f in ("submitted_at", "started_at", "finished_at", "date_done"))
    assert isinstance(body["runtime"], float)  # a duration, in seconds
    _, page = await alice.get(f"{T}/list", params={"limit": 1})
    assert utc(page["tasks"][0]["submitted_at"])
    _, stats = await admin.get(f"{T}/stats")
    assert all(utc(point["minute"]) for point in stats["tasks_per_minute"])
    _, report = await admin.get(f"{T}/health")
    assert utc(report["checked_at"])


async def test_a_pending_tasks_place_in_its_queue_is_read_only_when_asked(admin, rclient) -> None:
    """Clients poll pending tasks: their status reads the queue's depth and consumers (at
    most once a second per gateway); the place among the queued messages and the rate
    limit's use, a scan of the queue, only with `explain=true` (the dashboard's detail)."""
    task_id = str(uuid.uuid4())
    queue = f"tests_nobody_{uuid.uuid4().hex[:6]}"
    index = TaskIndex(rclient)
    index.record(task_id, "PENDING", 0, name="tests.record", queue=queue, owner="ops")
    try:
        _, polled = await admin.get(f"{T}/status/{task_id}")
        assert polled["queue_state"] == {"queue": queue, "waiting": 0, "consumers": 0}
        _, explained = await admin.get(f"{T}/status/{task_id}", params={"explain": "true"})
        state = explained["queue_state"]
        assert state["ahead"] is None and state["held"] is True  # no message of it queued
        assert state["rate_limit"] is None and state["rate_limit_used"] is None
        for params, field in (({"explain": "maybe"}, "explain"), ({"bogus": "1"}, "bogus")):
            status, body = await admin.get(f"{T}/status/{task_id}", params=params)
            assert status == 400 and field in body["details"]
    finally:
        index.record(task_id, "REVOKED", 0)


async def test_a_result_holding_nan_or_infinity_is_answered_as_null(alice, rclient) -> None:
    """Celery's JSON writes NaN and Infinity in a result (Python's json allows them), which
    strict parsers such as the status path's orjson refuse: the status still answers."""
    task_id = str(uuid.uuid4())
    TaskIndex(rclient).record(task_id, "SUCCESS", 0, name="x", queue="default", owner="alice")
    meta = '{"status": "SUCCESS", "result": {"score": NaN, "max": Infinity, "ok": 1}}'
    rclient.set(f"celery-task-meta-{task_id}", meta)
    status, body = await alice.get(f"{T}/status/{task_id}")
    assert status == 200 and body["status"] == "SUCCESS", body
    assert body["result"] == {"score": None, "max": None, "ok": 1}


async def test_a_result_holding_an_integer_beyond_64_bits_is_answered_exactly(
    alice, rclient
) -> None:
    """A strict fast parser may read it as a float: the status answers the stored integer."""
    task_id = str(uuid.uuid4())
    TaskIndex(rclient).record(task_id, "SUCCESS", 0, name="x", queue="default", owner="alice")
    big = 2**64 + 1
    rclient.set(f"celery-task-meta-{task_id}", json.dumps({"status": "SUCCESS", "result": big}))
    url = f"{alice.base_url}{T}/status/{task_id}"
    async with alice.http.get(url, headers=alice.headers()) as response:
        text = await response.text()
    assert response.status == 200 and f'"result":{big}' in text.replace(" ", ""), text
