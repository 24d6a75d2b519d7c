"""The Procfile under honcho: two workers share the queues; Flower sees the same workers."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from celery.result import AsyncResult

from tests.deploy.conftest import Processes, deploy_env, honcho_argv
from tests.support.waiting import wait_until
from workers.core import queues
from workers.core.settings import load_settings
from workers.dev.embedded_redis import free_port
from workers.runtime import registry
from workers.runtime.celery_config import create_celery_app

pytestmark = pytest.mark.slow

FLOWER_AUTH = ("ops", "correct-horse-battery")


def flower_get(url: str, auth: tuple[str, str] = FLOWER_AUTH) -> dict:
    token = b64encode(":".join(auth).encode()).decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.load(resp)


def test_two_procfile_workers_share_their_queues_and_flower_sees_them(
    private_redis: Callable, processes: Processes, log_dir: Path
) -> None:
    server = private_redis()
    flower_port = free_port()
    served = {queues.DEFAULT, queues.NOTIFICATION_DEFAULT}  # WORKER_QUEUES picks the pool
    env = deploy_env(
        server.url, WORKER_CONCURRENCY=1, FLOWER_PORT=flower_port, WORKER_QUEUES=",".join(served),
        FLOWER_USER=FLOWER_AUTH[0], FLOWER_PASSWORD=FLOWER_AUTH[1],
    )  # fmt: skip
    processes(honcho_argv("-c", "worker=2", "worker", "flower"), env, log_dir / "honcho.log")
    client = redis.Redis.from_url(server.url, decode_responses=True)
    app = create_celery_app(load_settings(redis_url=server.url))
    try:
        hostnames = wait_until(
            lambda: len(names := client.hkeys(registry.WORKERS_HASH)) == 2 and names,
            60, 0.1, "two Procfile workers registered",
        )  # fmt: skip
        assert sorted(h.split("@")[0] for h in hostnames) == ["worker.1", "worker.2"]
        info = json.loads(client.hget(registry.WORKERS_HASH, hostnames[0]))
        assert set(info["queues"]) == served

        ids = [app.send_task(queues.CHECK_TASK_HEALTH).id for _ in range(20)]
        results = [AsyncResult(task_id, app=app) for task_id in ids]
        wait_until(lambda: all(r.state == "SUCCESS" for r in results), 30, 0.1, "all tasks done")
        assert {r.worker for r in results} == set(hostnames)

        def flower_workers() -> dict:
            try:
                return flower_get(f"http://127.0.0.1:{flower_port}/api/workers?refresh=1")
            except OSError:
                return {}

        seen = wait_until(
            lambda: set(hostnames) <= set(found := flower_workers()) and found,
            45, 0.5, "Flower listing both workers",
        )  # fmt: skip
        consumed = {q["name"] for q in seen[hostnames[0]]["active_queues"]}
        assert consumed == served
        with pytest.raises(urllib.error.HTTPError) as refused:
            flower_get(f"http://127.0.0.1:{flower_port}/api/workers", ("ops", "wrong"))
        assert refused.value.code == 401
    finally:
        client.close()
        app.close()
