"""Deploy tests run against their own Redis servers, so restarts and passwords stay local."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import ROOT, ManagedProcess, base_env
from workers.embedded_redis import EmbeddedRedis

BIN = Path(sys.executable).parent


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


@pytest.fixture
def processes() -> Iterator[Callable[..., ManagedProcess]]:
    """Start any command as a managed process; all are stopped at the end, pass or fail."""
    started: list[ManagedProcess] = []

    def factory(argv: list[str], env: dict[str, str], log_path: Path) -> ManagedProcess:
        process = ManagedProcess(argv, env, log_path)
        started.append(process)
        return process

    yield factory
    for process in reversed(started):
        process.stop()


def deploy_env(redis_url: str, **extra: Any) -> dict[str, str]:
    """The environment of a deployed process: the venv's tools first on PATH."""
    env = base_env(redis_url, **extra)
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    return env


def honcho_argv(*args: str) -> list[str]:
    return [str(BIN / "honcho"), "start", "-f", str(ROOT / "Procfile"), "-d", str(ROOT), *args]
