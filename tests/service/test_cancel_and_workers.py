"""Cancel that outlives worker restarts, worker information and control."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from tests.service.test_tasks_api import T, wait_status
from tests.support.waiting import async_wait_until, wait_until

QUEUE = "tests_cancel"


async def test_cancel_of_a_task_a_worker_holds_for_its_eta_survives_a_restart(
    admin, celery_app, start_worker, rclient, key
) -> None:
    ran = f"{key}:ran"
    worker = start_worker(queues=QUEUE, concurrency=1, name="eta")
    eta = datetime.now(UTC) + timedelta(seconds=2)
    held = celery_app.send_task("tests.record", args=[ran, "held"], queue=QUEUE, eta=eta)
    assert (await admin.post(f"{T}/cancel/{held.id}"))[0] == 200
    worker.stop()  # the unacknowledged message goes back to the queue
    worker = start_worker(queues=QUEUE, concurrency=1, name="eta2")
    # Due after the held one: had the cancel not held, the held task would run first.
    marker = celery_app.send_task(
        "tests.record", args=[ran, "marker"], queue=QUEUE, eta=eta + timedelta(seconds=1)
    )
    await wait_status(admin, marker.id, {"SUCCESS"}, timeout=30)
    assert rclient.lrange(ran, 0, -1) == ["marker"]


async def test_running_task_needs_terminate_and_admin(
    admin, alice, celery_app, start_worker, rclient, key
) -> None:
    start_worker(queues=QUEUE, concurrency=1, name="term")
    started, release = f"{key}:started", f"{key}:release"
    task = celery_app.send_task("tests.block", args=[started, release, 30], queue=QUEUE)
    wait_until(lambda: rclient.llen(started), 20, what="task running")
    status, body = await admin.post(f"{T}/cancel/{task.id}")
    assert status == 409 and "already running" in body["error"]
    status, body = await admin.post(f"{T}/cancel/{task.id}", params={"terminate": "true"})
    assert status == 202 and body["status"] == "REVOKING"
    done = await wait_status(admin, task.id, {"REVOKED", "FAILURE", "SUCCESS"})
    assert done["status"] == "REVOKED"
    assert rclient.get(f"{started}:completions") is None


async def test_workers_lists_each_worker_with_its_queues_and_counts(admin, start_worker) -> None:
    worker = start_worker(queues=f"{QUEUE},default", concurrency=2, name="listed")
    status, body = await admin.get(f"{T}/workers")
    assert status == 200
    mine = next(w for w in body["workers"] if w["hostname"] == worker.hostname)
    assert mine["status"] == "online" and mine["responded"] is True
    assert set(mine["queues"]) == {QUEUE, "default"}
    assert mine["concurrency"] == 2 and mine["active"] == 0 and mine["reserved"] == 0
    assert mine["last_heartbeat"] and mine["pid"] == worker.pid


async def test_pool_restart_and_shutdown_reach_the_named_worker(admin, start_worker) -> None:
    worker = start_worker(queues=QUEUE, concurrency=1, name="ctl")
    before = set(worker.pool_pids())
    status, body = await admin.post(
        f"{T}/workers/pool/restart", params={"worker_name": worker.hostname}
    )
    assert status == 200 and worker.hostname in body["replies"]
    wait_until(lambda: set(worker.pool_pids()) - before, 20, what="a new pool process")

    unknown = f"nobody-{uuid.uuid4().hex[:6]}@nowhere"
    status, _ = await admin.post(f"{T}/workers/shutdown", json={"worker_name": unknown})
    assert status == 404
    status, _ = await admin.post(f"{T}/workers/pool/restart", params={"worker_name": unknown})
    assert status == 404
    status, body = await admin.post(f"{T}/workers/shutdown", json={})
    assert status == 400 and "worker_name" in body["details"]

    status, body = await admin.post(f"{T}/workers/shutdown", json={"worker_name": worker.hostname})
    assert status == 200 and worker.hostname in body["replies"]
    wait_until(lambda: not worker.alive(), 20, what="the worker to exit")


async def test_history_survives_a_gateway_restart_and_is_shared_by_replicas(
    redis_url, log_dir, worker, http
) -> None:
    from tests.support.api import ADMIN, API_KEYS, Api
    from tests.support.processes import start_gateway, start_gateways

    first = start_gateway(redis_url, log_dir, env={"API_KEYS": API_KEYS})
    try:
        api = Api(http, first.base_url, ADMIN)
        _, body = await api.post(
            "/api/v1/tasks/ai/generate", json={"conversation_id": "c", "user_message": "m"}
        )
        await wait_status(api, body["task_id"], {"SUCCESS"})
    finally:
        first.stop()
    second, third = start_gateways(redis_url, log_dir, 2, env={"API_KEYS": API_KEYS})
    try:
        for gw in (second, third):
            status, record = await Api(http, gw.base_url, ADMIN).get(
                f"{T}/status/{body['task_id']}"
            )
            assert status == 200 and record["status"] == "SUCCESS"
    finally:
        second.stop()
        third.stop()


async def test_submissions_while_redis_is_down_get_503_with_retry_after(
    log_dir, http, serve_gateway
) -> None:
    from tests.support.api import Api
    from workers.dev.embedded_redis import EmbeddedRedis

    server = EmbeddedRedis(log_dir / f"redis-down-{uuid.uuid4().hex[:6]}", appendonly=False)
    server.start()
    try:
        gw = await serve_gateway(redis_url=server.url)
        api = Api(http, gw.base_url, None)
        server.kill()

        async def answered():
            status, body = await api.post(
                "/api/v1/tasks/ai/generate", json={"conversation_id": "c", "user_message": "m"}
            )
            return (status, body)

        status, body = await async_wait_until(answered, 10)
        assert status == 503 and body["error"]
        for path in (f"{T}/list", f"{T}/stats", f"{T}/status/x"):
            async with http.get(f"{gw.base_url}{path}") as resp:
                assert resp.status == 503 and resp.headers["Retry-After"]
    finally:
        server.stop()
