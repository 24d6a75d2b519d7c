"""Redis restarts under a stream of submissions: 503 + Retry-After meanwhile, nothing lost."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from tests.deploy.conftest import Processes, deploy_env, http, wait_worker_ready, worker_argv
from tests.support.processes import start_gateway
from tests.support.waiting import wait_for_state, wait_until
from workers.core import queues
from workers.core.settings import load_settings
from workers.runtime.celery_config import create_celery_app

pytestmark = pytest.mark.slow

SLOW_ANSWER = 5.0  # seconds; an answer slower than this counts as a hang


def queued_task_ids(client: redis.Redis, queue: str) -> set[str]:
    ids = set()
    for key in client.scan_iter(f"{queue}*"):
        if client.type(key) == b"list":
            ids |= {json.loads(raw)["headers"]["id"] for raw in client.lrange(key, 0, -1)}
    return ids


def test_redis_restart_during_submissions_gives_503_then_resumes_and_loses_nothing(
    private_redis: Callable, processes: Processes, log_dir: Path
) -> None:
    # appendfsync always: what Redis acknowledged is on disk, even through SIGKILL.
    server = private_redis("--appendfsync", "always", name="aof-redis", appendonly=True)
    hostname = f"restart-{uuid.uuid4().hex[:6]}@localhost"
    probe = redis.Redis(port=server.port)
    # The worker takes only `default`: submitted AI tasks stay queued, where they are counted.
    worker = processes(
        worker_argv(hostname, queues=queues.DEFAULT), deploy_env(server.url), log_dir / "w-r.log"
    )
    wait_worker_ready(worker, probe, hostname)
    gateway = processes.register(start_gateway(server.url, log_dir))
    url = f"{gateway.base_url}/api/v1/tasks/ai/generate"
    accepted: list[str] = []
    answers: list[tuple[int, str | None, float]] = []

    def submit() -> int:
        started = time.monotonic()
        status, headers, body = http("POST", url, {"conversation_id": "c", "user_message": "hi"})
        answers.append((status, headers.get("Retry-After"), time.monotonic() - started))
        if status == 202:
            accepted.append(body["task_id"])
        return status

    try:
        for _ in range(10):
            assert submit() == 202
        server.kill()

        def three_refusals() -> bool:
            submit()
            return [status for status, _, _ in answers].count(503) >= 3

        wait_until(three_refusals, 30, 0, "503 answers during the outage")
        server.start()  # same port, same data directory
        wait_until(lambda: submit() == 202, 30, 0.05, "submissions accepted again")
        for _ in range(10):
            assert submit() == 202

        assert {status for status, _, _ in answers} == {202, 503}
        assert all(retry for status, retry, _ in answers if status == 503)
        assert max(elapsed for _, _, elapsed in answers) < SLOW_ANSWER
        assert len(accepted) >= 21
        assert set(accepted) <= queued_task_ids(probe, queues.AI_HIGH_PRIORITY), "lost a task"

        # The worker reconnected by itself and works again.
        app = create_celery_app(load_settings(redis_url=server.url))
        try:
            task = app.send_task(queues.CHECK_TASK_HEALTH)
            wait_for_state(app, task.id, "SUCCESS", timeout=30)
        finally:
            app.close()
        assert "Traceback" not in gateway.log()
    finally:
        probe.close()
