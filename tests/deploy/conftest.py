"""Deploy tests run against their own Redis servers, so restarts and passwords stay local."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from tests.support.processes import ROOT, TEST_TASKS, ManagedProcess, base_env
from tests.support.waiting import wait_until
from workers.core.queues import QUEUES
from workers.dev.embedded_redis import EmbeddedRedis
from workers.runtime import registry

BIN = Path(sys.executable).parent
P = TypeVar("P", bound=ManagedProcess)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Callable[..., EmbeddedRedis]]:
    """Start a Redis of the test's own (extra redis-server arguments allowed)."""
    started: list[EmbeddedRedis] = []

    def factory(*extra_args: str, name: str = "redis", appendonly: bool = False) -> EmbeddedRedis:
        server = EmbeddedRedis(
            tmp_path / name, appendonly=appendonly, extra_args=extra_args,
            logfile=tmp_path / f"{name}.log",
        ).start()  # fmt: skip
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


class Processes:
    """Processes started for one test; `stop_all` stops them newest first."""

    def __init__(self) -> None:
        self.started: list[ManagedProcess] = []

    def __call__(self, argv: list[str], env: dict[str, str], log_path: Path) -> ManagedProcess:
        return self.register(ManagedProcess(argv, env, log_path))

    def register(self, process: P) -> P:
        """Also stop a process started elsewhere (`start_gateway`)."""
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.started):
            process.stop()


@pytest.fixture
def processes() -> Iterator[Processes]:
    """Start any command as a managed process; all are stopped at the end, pass or fail."""
    group = Processes()
    yield group
    group.stop_all()


def deploy_env(redis_url: str, **extra: Any) -> dict[str, str]:
    """The environment of a deployed process: the venv's tools first on PATH."""
    env = base_env(redis_url, **extra)
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    return env


def honcho_argv(*args: str) -> list[str]:
    return [str(BIN / "honcho"), "start", "-f", str(ROOT / "Procfile"), "-d", str(ROOT), *args]


def worker_argv(hostname: str, concurrency: int = 1, queues: str | None = None) -> list[str]:
    """A worker as the harness starts one (test tasks loaded), under a chosen node name."""
    return [
        sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-E",
        "-Q", queues or ",".join(QUEUES), "-c", str(concurrency), "-n", hostname,
        "-I", TEST_TASKS, "--without-mingle", "--without-gossip",
    ]  # fmt: skip


def wait_worker_ready(worker: ManagedProcess, probe: redis.Redis, hostname: str) -> None:
    """Until the worker has registered itself (read through `probe`, a direct client)."""
    wait_until(
        lambda: not worker.alive() or probe.hexists(registry.WORKERS_HASH, hostname),
        45, 0.1, f"worker {hostname} ready",
    )  # fmt: skip
    if not worker.alive():
        raise RuntimeError(f"worker exited at start-up:\n{worker.log()[-3000:]}")


def http(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> tuple[int, dict[str, str], Any]:  # fmt: skip
    """One HTTP call: status, headers and the JSON body (None when not JSON)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            status, resp_headers, raw = resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        status, resp_headers, raw = exc.code, dict(exc.headers), exc.read()
    try:
        return status, resp_headers, json.loads(raw)
    except ValueError:
        return status, resp_headers, None
