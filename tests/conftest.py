"""The test harness: a real Redis, real Celery workers, the real gateway.

Redis starts once per session on a free port, before any test imports the Celery app, and
REDIS_URL points every process at it. Workers and gateways are real subprocesses.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from workers.dev.embedded_redis import EmbeddedRedis

_server: EmbeddedRedis | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _server
    if hasattr(config, "workerinput"):  # pragma: no cover - xdist not used
        return
    base = Path(config.rootpath) / "var" / "test"
    base.mkdir(parents=True, exist_ok=True)
    _server = EmbeddedRedis(base / f"redis-{os.getpid()}", appendonly=False).start()
    os.environ["REDIS_URL"] = _server.url
    # A developer's .env must not leak into the suite.
    os.environ.setdefault("APP_ENV", "development")
    os.environ["API_KEYS"] = ""
    # The platform-wide rate limits (10/min AI replies) would pace the whole suite; the
    # rate limit's own tests set small limits on their workers.
    os.environ["AI_RATE_LIMIT"] = "100000/m"
    os.environ["VECTORIZE_RATE_LIMIT"] = "100000/m"


def pytest_unconfigure(config: pytest.Config) -> None:
    if _server is not None:
        _server.stop()


@pytest.fixture(scope="session")
def redis_url() -> str:
    assert _server is not None
    return _server.url


@pytest.fixture(scope="session")
def redis_server() -> EmbeddedRedis:
    assert _server is not None
    return _server


@pytest.fixture
def rclient(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture
def key() -> str:
    """A fresh Redis key prefix for one test."""
    return f"tests:{uuid.uuid4().hex}"


@pytest.fixture(scope="session")
def celery_app():  # type: ignore[no-untyped-def]
    from workers.celery_app import celery_app

    return celery_app


@pytest.fixture
def start_worker(redis_url: str, log_dir: Path) -> Iterator[Callable[..., Any]]:
    """Start workers for one test; every one is stopped at the end, pass or fail."""
    from tests.support.processes import start_worker as start

    started: list[Any] = []

    def factory(**kwargs: Any) -> Any:
        worker = start(redis_url, log_dir, **kwargs)
        started.append(worker)
        return worker

    yield factory
    for worker in started:
        worker.stop()


@pytest.fixture(scope="session")
def worker(redis_url: str, log_dir: Path) -> Iterator[Any]:
    """One worker on all four queues, shared by the tests that only need the default."""
    from tests.support.processes import start_worker as start

    w = start(redis_url, log_dir, name="shared", concurrency=2)
    yield w
    w.stop()


@pytest.fixture(scope="session")
def gateway(redis_url: str, log_dir: Path) -> Iterator[Any]:
    from tests.support.processes import start_gateway

    g = start_gateway(redis_url, log_dir)
    yield g
    g.stop()
