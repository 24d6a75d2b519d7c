"""SIGTERM: a worker finishes what it holds and leaves the rest queued; the gateway exits 0,
all of its processes with it."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
import redis

from tests.deploy.conftest import Processes, deploy_env, wait_worker_ready, worker_argv
from tests.support.processes import start_gateway
from tests.support.waiting import wait_for_state, wait_until
from workers.core.settings import load_settings
from workers.runtime.celery_config import create_celery_app

pytestmark = pytest.mark.slow


def test_worker_sigterm_mid_task_finishes_it_and_leaves_queued_work_for_others(
    private_redis: Callable, processes: Processes, log_dir: Path
) -> None:
    server = private_redis()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    app = create_celery_app(load_settings(redis_url=server.url))
    key = f"tests:{uuid.uuid4().hex}"
    try:
        first = f"graceful-a-{uuid.uuid4().hex[:6]}@localhost"
        worker = processes(worker_argv(first), deploy_env(server.url), log_dir / "w-a.log")
        wait_worker_ready(worker, client, first)
        running = app.send_task("tests.block", args=[f"{key}:run", f"{key}:go"])
        queued = app.send_task("tests.block", args=[f"{key}:queued", f"{key}:go"])
        wait_until(lambda: client.llen(f"{key}:run") == 1, 20, 0.05, "first task running")

        os.kill(worker.pid, signal.SIGTERM)  # what Docker and Kubernetes send
        wait_until(lambda: "Warm shutdown" in worker.log(), 10, 0.05, "warm shutdown begun")
        assert worker.alive(), "the worker quit with a task in hand"
        client.set(f"{key}:go", 1)  # the running task may now finish
        assert worker.process.wait(30) == 0
        assert wait_for_state(app, running.id, "SUCCESS").result["attempt"] == 1
        assert client.llen(f"{key}:queued") == 0, "a stopping worker took new work"

        second = f"graceful-b-{uuid.uuid4().hex[:6]}@localhost"
        other = processes(worker_argv(second), deploy_env(server.url), log_dir / "w-b.log")
        wait_worker_ready(other, client, second)
        assert wait_for_state(app, queued.id, "SUCCESS").result["attempt"] == 1
        for name in ("run", "queued"):  # each ran exactly once
            assert client.get(f"{key}:{name}:attempts") == "1"
            assert client.get(f"{key}:{name}:completions") == "1"
        assert "Traceback" not in worker.log()
    finally:
        client.close()
        app.close()


def test_sigterm_to_the_whole_group_requeues_the_interrupted_task_and_loses_nothing(
    private_redis: Callable, processes: Processes, log_dir: Path
) -> None:
    """Heroku and honcho signal every process: the pool child dies, its task goes back."""
    server = private_redis()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    app = create_celery_app(load_settings(redis_url=server.url))
    key = f"tests:{uuid.uuid4().hex}"
    try:
        first = f"group-a-{uuid.uuid4().hex[:6]}@localhost"
        worker = processes(worker_argv(first), deploy_env(server.url), log_dir / "g-a.log")
        wait_worker_ready(worker, client, first)
        task = app.send_task("tests.block", args=[f"{key}:run", f"{key}:go"])
        wait_until(lambda: client.llen(f"{key}:run") == 1, 20, 0.05, "task running")
        worker.signal(signal.SIGTERM)
        worker.process.wait(30)

        client.set(f"{key}:go", 1)
        second = f"group-b-{uuid.uuid4().hex[:6]}@localhost"
        other = processes(worker_argv(second), deploy_env(server.url), log_dir / "g-b.log")
        wait_worker_ready(other, client, second)
        assert wait_for_state(app, task.id, "SUCCESS").result["attempt"] == 2
        assert client.get(f"{key}:run:completions") == "1"
    finally:
        client.close()
        app.close()


def test_gateway_sigterm_exits_cleanly(
    private_redis: Callable, processes: Processes, log_dir: Path
) -> None:
    server = private_redis()
    gateway = processes.register(start_gateway(server.url, log_dir))
    os.kill(gateway.pid, signal.SIGTERM)
    assert gateway.process.wait(15) == 0
    assert "Traceback" not in gateway.log()


def test_gateway_in_two_processes_closes_every_websocket_and_stops_on_sigterm(
    private_redis: Callable, processes: Processes, log_dir: Path, tmp_path: Path
) -> None:
    server = private_redis()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    gateway = processes.register(
        start_gateway(server.url, log_dir, env={"WEB_CONCURRENCY": 2, "TMPDIR": tmp})
    )
    pids = wait_until(lambda: len(p := gateway.children()) == 2 and p, 20, what="2 processes")
    assert [d for d in tmp.iterdir() if d.name.startswith("claw-web-metrics-")]

    async def close_codes_after_sigterm() -> list[int | None]:
        async with aiohttp.ClientSession() as http:
            sockets = []
            for pid in pids:  # one websocket on each process
                with gateway.served_by(pid):
                    sockets.append(await http.ws_connect(f"{gateway.base_url}/api/v1/tasks/ws"))
            os.kill(gateway.pid, signal.SIGTERM)  # to the master only, as Docker does

            async def until_closed(ws: aiohttp.ClientWebSocketResponse) -> int | None:
                while (await ws.receive(timeout=10)).type == aiohttp.WSMsgType.TEXT:
                    pass
                return ws.close_code

            # Both at once: each process waits (1 s) for the answer to its close frame.
            return list(await asyncio.gather(*(until_closed(ws) for ws in sockets)))

    assert asyncio.run(close_codes_after_sigterm()) == [1001, 1001]
    assert gateway.process.wait(15) == 0
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    assert not list(tmp.iterdir()), "the metrics directory outlived the gateway"
    assert "Traceback" not in gateway.log()
