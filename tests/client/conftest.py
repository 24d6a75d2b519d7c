"""The client's tests run against a real gateway process and a real worker on a Redis
database of their own (the suite's shared worker never takes their tasks), with a local
OpenAI stand-in: one of each for the package."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from claw_client import AsyncClawClient, ClawClient

from tests.support.api import ADMIN, ALICE, API_KEYS, BOB
from tests.support.fake_openai import FakeOpenAI
from tests.support.processes import (
    Gateway,
    Worker,
    database_url,
    start_gateway,
    start_worker,
)
from tests.support.publishing import Publish, publisher
from tests.support.webhook_server import TaskWebhookReceiver

QUEUE = "tests_client"
# Task webhooks may be delivered to a receiver on loopback (every other private address
# stays forbidden).
WEBHOOK_NETWORKS = "127.0.0.1/32"


@pytest.fixture(scope="package")
def client_redis_url(redis_url: str) -> str:
    return database_url(redis_url, 4)


@pytest.fixture(scope="package")
def fake_openai() -> Iterator[FakeOpenAI]:
    # "[slow]" replies stream 30 more words, 20 ms apart: long enough to be followed live.
    with FakeOpenAI.running(slow_words=30, slow_delay=0.02) as server:
        yield server


@pytest.fixture(scope="package")
def client_worker(client_redis_url, log_dir, fake_openai) -> Iterator[Worker]:
    env = fake_openai.env(
        AI_RATE_LIMIT="1000/s", VECTORIZE_RATE_LIMIT="1000/s",
        WEBHOOK_ALLOWED_NETWORKS=WEBHOOK_NETWORKS,
    )  # fmt: skip
    # `default`: batches and bulk actions (run_batch, finish_batch, bulk_action).
    worker = start_worker(
        client_redis_url, log_dir, name="client", env=env, concurrency=2,
        queues=f"{QUEUE},ai_high_priority,notification_default,knowledge_default,default",
    )  # fmt: skip
    yield worker
    worker.stop()


@pytest.fixture(scope="package")
def gateway(client_redis_url, log_dir, client_worker, fake_openai) -> Iterator[Gateway]:
    # The gateway ends a stream with `resume` once it is a second old, or 10 events behind
    # (a burst): the client must follow by itself. A heartbeat every second. Schedules may
    # fire every 0.5 s (test_batches_bulk_schedules.py's Beat fires them).
    env = fake_openai.env(
        API_KEYS=API_KEYS, SSE_MAX_AGE="1", SSE_BUFFER="10", SSE_HEARTBEAT="1",
        WEBHOOK_ALLOWED_NETWORKS=WEBHOOK_NETWORKS, SCHEDULE_MIN_INTERVAL="0.5",
    )  # fmt: skip
    g = start_gateway(client_redis_url, log_dir, env=env)
    yield g
    g.stop()


@pytest.fixture(scope="package")
def publish(client_redis_url, celery_app) -> Iterator[Publish]:
    """Publish a test task to the package's worker (tests/support/publishing.py); it has
    no owner, so only ADMIN's key sees it."""
    with publisher(celery_app, client_redis_url, QUEUE) as send:
        yield send


@pytest.fixture(scope="package")
def receiver() -> Iterator[TaskWebhookReceiver]:
    """A receiver of task and batch webhooks on loopback (tests/support/webhook_server.py)."""
    server = TaskWebhookReceiver().start()
    yield server
    server.stop()


def _client_of(key: str) -> Callable[..., Iterator[ClawClient]]:
    """A fixture: a sync client with `key` on the package's gateway."""

    def client(gateway: Gateway) -> Iterator[ClawClient]:
        with ClawClient(gateway.base_url, key) as client:
            yield client

    return pytest.fixture(client)


alice = _client_of(ALICE)
bob = _client_of(BOB)
admin = _client_of(ADMIN)


@pytest.fixture
async def async_alice(gateway) -> AsyncIterator[AsyncClawClient]:
    async with AsyncClawClient(gateway.base_url, ALICE) as client:
        yield client


@pytest.fixture
def claw(gateway) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the `claw` CLI (as `python -m claw_client.cli`) against the gateway."""

    def run(*args: str, key: str = ALICE) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "CLAW_URL": gateway.base_url, "CLAW_API_KEY": key}
        return subprocess.run(
            [sys.executable, "-m", "claw_client.cli", *args], env=env, capture_output=True,
            text=True, timeout=60,
        )  # fmt: skip

    return run
