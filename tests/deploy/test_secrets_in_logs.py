"""Canary secrets in the environment never show up in any process's log or API answer."""

from __future__ import annotations

import json
import sys
import urllib.request
import uuid
from base64 import b64encode
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from tests.deploy.conftest import Processes, deploy_env, http, wait_worker_ready, worker_argv
from tests.support.processes import start_gateway
from tests.support.waiting import wait_for_state, wait_until
from workers.core import queues
from workers.core.settings import load_settings
from workers.dev.embedded_redis import free_port
from workers.runtime.celery_config import create_celery_app

pytestmark = pytest.mark.slow

REDIS_PASSWORD = "canary-redis-pw-4711"
API_TOKEN = "canary-token-api-8801"
FLOWER_PASSWORD = "canary-flower-pw-3302"
OPENAI_KEY = "sk-canary-openai-5599aa"
CANARIES = (REDIS_PASSWORD, API_TOKEN, FLOWER_PASSWORD, OPENAI_KEY)


def test_no_secret_in_logs_of_gateway_worker_and_flower(
    private_redis: Callable, processes: Processes, log_dir: Path, tmp_path: Path
) -> None:
    server = private_redis(name="locked-redis")
    with redis.Redis(port=server.port) as admin:  # locked once up: the start-up probe has none
        admin.config_set("requirepass", REDIS_PASSWORD)
    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{server.port}/0"
    flower_port = free_port()
    secrets = {
        "APP_ENV": "production", "API_KEYS": f"{API_TOKEN}:ops:admin",
        "FLOWER_USER": "ops", "FLOWER_PASSWORD": FLOWER_PASSWORD, "FLOWER_PORT": flower_port,
        "OPENAI_API_KEY": OPENAI_KEY,
        # Nothing listens there: the AI task fails on the network, with the key in hand.
        "OPENAI_BASE_URL": f"http://127.0.0.1:{free_port()}/v1",
    }  # fmt: skip
    logs = tmp_path / "canary-logs"
    logs.mkdir()
    probe = redis.Redis(port=server.port, password=REDIS_PASSWORD, decode_responses=True)
    app = create_celery_app(load_settings(redis_url=url))
    answers: list[str] = []
    try:
        hostname = f"canary-{uuid.uuid4().hex[:6]}@localhost"
        worker = processes(worker_argv(hostname), deploy_env(url, **secrets), logs / "worker.log")
        wait_worker_ready(worker, probe, hostname)
        gateway = processes.register(start_gateway(url, logs, env=secrets))
        flower = processes(
            [sys.executable, "-m", "workers.dev.flower"],
            deploy_env(url, **secrets),
            logs / "flower.log",
        )

        beat = processes(
            [sys.executable, "-m", "celery", "-A", "workers.celery_app", "beat"],
            deploy_env(url, **secrets), logs / "beat.log",
        )  # fmt: skip
        auth = {"Authorization": f"Bearer {API_TOKEN}"}
        status, _, body = http(
            "POST", f"{gateway.base_url}/api/v1/tasks/ai/generate",
            {"conversation_id": "c", "user_message": "hi"}, auth,
        )  # fmt: skip
        assert status == 202, body
        wait_for_state(app, body["task_id"], {"RETRY", "FAILURE", "SUCCESS"}, timeout=30)
        for path in (f"/api/v1/tasks/status/{body['task_id']}", "/api/v1/tasks/workers",
                     "/api/v1/tasks/stats", "/healthz"):  # fmt: skip
            answers.append(json.dumps(http("GET", f"{gateway.base_url}{path}", None, auth)[2]))
        answers.append(json.dumps(http("GET", f"{gateway.base_url}/api/v1/tasks/stats")[2]))
        wait_for_state(app, app.send_task(queues.CHECK_TASK_HEALTH).id, "SUCCESS")

        token = b64encode(f"ops:{FLOWER_PASSWORD}".encode()).decode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{flower_port}/api/workers?refresh=1",
            headers={"Authorization": f"Basic {token}"},
        )

        def flower_answer() -> str | None:
            try:
                with urllib.request.urlopen(request, timeout=10) as resp:
                    return resp.read().decode()
            except OSError:
                return None

        answers.append(wait_until(flower_answer, 30, 0.2, "Flower answering"))
        wait_until(lambda: probe.exists("claw:redbeat:lock"), 20, 0.1, "Beat holding its lock")
        for process in (gateway, worker, flower, beat):
            process.stop()
    finally:
        probe.close()
        app.close()

    for path in logs.iterdir():
        text = path.read_text(errors="replace")
        for canary in CANARIES:
            assert canary not in text, f"{canary} in {path.name}"
    for answer in answers:
        for canary in CANARIES:
            assert canary not in answer
    # Production logs are JSON lines; a task's lines name the task.
    records = [
        json.loads(line)
        for line in (logs / "worker.log").read_text().splitlines()
        if line.startswith("{")
    ]
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert any(r.get("task_name") == queues.CHECK_TASK_HEALTH and r.get("task_id")
               and r.get("queue") == queues.DEFAULT for r in records)  # fmt: skip
