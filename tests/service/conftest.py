"""The API's fixtures: a gateway with API keys, in this process (`serve_gateway`), on the
session's Redis; an admin (ops) and two users (alice, bob)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from tests.support.api import ADMIN, ALICE, API_KEYS, BOB, Api
from tests.support.webhook_server import TaskWebhookReceiver


@pytest.fixture
async def secured_gateway(serve_gateway) -> Any:
    return await serve_gateway(api_keys=API_KEYS)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def admin(http, secured_gateway) -> Api:
    return Api(http, secured_gateway.base_url, ADMIN)


@pytest.fixture
def alice(http, secured_gateway) -> Api:
    return Api(http, secured_gateway.base_url, ALICE)


@pytest.fixture
def bob(http, secured_gateway) -> Api:
    return Api(http, secured_gateway.base_url, BOB)


@pytest.fixture
def anonymous(http, secured_gateway) -> Api:
    return Api(http, secured_gateway.base_url, None)


@pytest.fixture(scope="module")
def receiver() -> Iterator[TaskWebhookReceiver]:
    """A local webhook receiver (tests/support/webhook_server.py), one per module."""
    server = TaskWebhookReceiver().start()
    yield server
    server.stop()
