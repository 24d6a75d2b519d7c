from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from tests.support.api import ADMIN, ALICE, API_KEYS, BOB, Api


@pytest.fixture(scope="module")
def secured_gateway(redis_url, log_dir) -> Iterator[Any]:
    """A gateway with API keys: an admin (ops) and two users (alice, bob)."""
    from tests.support.processes import start_gateway

    g = start_gateway(redis_url, log_dir, env={"API_KEYS": API_KEYS})
    yield g
    g.stop()


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
