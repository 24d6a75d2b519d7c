"""Redis behind a real Sentinel: the gateway and a worker find the primary through it."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.deploy.conftest import Processes, deploy_env, http, wait_worker_ready, worker_argv
from tests.support.processes import start_gateway
from tests.support.waiting import wait_until
from workers.dev.embedded_redis import find_redis_server, free_port
from workers.runtime import registry

pytestmark = pytest.mark.slow

MASTER = "claw-primary"
LOCK_KEY = "claw:redbeat:lock"


@pytest.fixture
def sentinel_port(private_redis: Callable, tmp_path: Path) -> Iterator[int]:
    """A Sentinel (the same redis-server binary) monitoring a fresh primary."""
    primary = private_redis(name="primary")
    port = free_port()
    config = tmp_path / "sentinel.conf"  # Sentinel rewrites its config: a file of its own
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor {MASTER} 127.0.0.1 {primary.port} 1\n"
    )
    log = open(tmp_path / "sentinel.log", "ab")
    process = subprocess.Popen(
        [find_redis_server(), str(config), "--sentinel"], stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    client = redis.Redis(port=port, socket_timeout=1, decode_responses=True)
    try:

        def knows_primary() -> bool:
            try:
                return client.sentinel_get_master_addr_by_name(MASTER) == (
                    "127.0.0.1", primary.port,
                )  # fmt: skip
            except redis.exceptions.RedisError:
                return False

        wait_until(knows_primary, 15, 0.05, "Sentinel monitoring the primary")
        yield port
    finally:
        client.close()
        process.terminate()
        process.wait(10)
        log.close()


def test_gateway_and_worker_reach_redis_through_sentinel_and_a_task_completes(
    sentinel_port: int, private_redis: Callable, processes: Processes, log_dir: Path
) -> None:
    url = f"sentinel://127.0.0.1:{sentinel_port}/0"
    env = {"REDIS_SENTINEL_MASTER": MASTER}
    primary_port = int(redis.Redis(port=sentinel_port).sentinel_get_master_addr_by_name(MASTER)[1])
    probe = redis.Redis(port=primary_port, decode_responses=True)
    try:
        hostname = f"sentinel-{uuid.uuid4().hex[:6]}@localhost"
        worker = processes(
            worker_argv(hostname), deploy_env(url, **env), log_dir / "worker-sentinel.log"
        )
        wait_worker_ready(worker, probe, hostname)
        gateway = processes.register(start_gateway(url, log_dir, env=env))

        status, _, body = http(
            "POST", f"{gateway.base_url}/api/v1/tasks/ai/generate",
            {"conversation_id": "c", "user_message": "hi"},
        )  # fmt: skip
        assert status == 202, body
        task_id = body["task_id"]

        def finished() -> dict | None:
            code, _, state = http("GET", f"{gateway.base_url}/api/v1/tasks/status/{task_id}")
            return state if code == 200 and state["status"] == "SUCCESS" else None

        result = wait_until(finished, 30, 0.1, "the task done, seen through the gateway")
        assert result["result"]["conversation_id"] == "c"
        # The data went to the primary the Sentinel named.
        assert probe.hexists(registry.WORKERS_HASH, hostname)
        code, _, health = http("GET", f"{gateway.base_url}/healthz")
        assert code == 200 and health["workers"] >= 1

        # Beat's RedBeat scheduler and its lock go through the Sentinel too.
        beat_argv = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "beat"]
        beat = processes(beat_argv, deploy_env(url, **env), log_dir / "beat-sentinel.log")
        wait_until(lambda: probe.exists(LOCK_KEY) or not beat.alive(), 20, 0.1, "Beat lock")
        assert beat.alive(), beat.log()[-2000:]
    finally:
        probe.close()
