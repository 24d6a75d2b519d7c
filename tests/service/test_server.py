"""WEB_CONCURRENCY=2: two gateway processes on one port, metrics that add up across them,
a killed process replaced while the other answers."""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.waiting import async_wait_until, wait_until

pytestmark = pytest.mark.slow

HEALTHZ = "/healthz"
WS = "/api/v1/tasks/ws"


@pytest.fixture(scope="module")
def two_process_gateway(redis_url, log_dir) -> Iterator[Any]:
    from tests.support.processes import start_gateway

    gateway = start_gateway(redis_url, log_dir, env={"WEB_CONCURRENCY": 2})
    try:
        wait_until(lambda: len(gateway.children()) == 2, 20, what="two gateway processes")
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # A connection per request, so that `served_by` decides which process answers.
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True), timeout=aiohttp.ClientTimeout(20)
    ) as session:
        yield session


async def get_text(http: aiohttp.ClientSession, gateway: Any, path: str) -> str:
    async with http.get(gateway.base_url + path) as resp:
        assert resp.status == 200, path
        return await resp.text()


def sample(text: str, name: str, **labels: str) -> float:
    """One sample's value in a Prometheus text page (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and labels.items() <= found.labels.items():
                return found.value
    return 0.0


healthz_count = functools.partial(
    sample, name="claw_api_request_seconds_count", method="GET", route=HEALTHZ, status="200"
)
websocket_clients = functools.partial(sample, name="claw_websocket_clients")


async def test_metrics_count_the_requests_of_every_process_whichever_answers(
    http, two_process_gateway
) -> None:
    gateway = two_process_gateway
    first, second = gateway.children()
    before = healthz_count(await get_text(http, gateway, "/metrics"))
    for pid, requests in ((first, 7), (second, 5)):
        with gateway.served_by(pid):
            for _ in range(requests):
                await get_text(http, gateway, HEALTHZ)
    for pid in (first, second):
        with gateway.served_by(pid):
            assert healthz_count(await get_text(http, gateway, "/metrics")) == before + 12


async def test_a_killed_process_is_replaced_while_the_other_answers(
    http, two_process_gateway
) -> None:
    gateway = two_process_gateway
    victim, survivor = gateway.children()
    sockets = []
    for pid in (victim, survivor):
        with gateway.served_by(pid):
            sockets.append(await http.ws_connect(gateway.base_url + WS))
    assert websocket_clients(await get_text(http, gateway, "/metrics")) == 2

    os.kill(victim, signal.SIGKILL)

    async def replaced() -> list[int] | None:
        await get_text(http, gateway, HEALTHZ)  # answered all along, by the survivor
        pids = gateway.children()
        return pids if len(pids) == 2 and victim not in pids else None

    pids = await async_wait_until(replaced, 30, 0.05, "the killed process replaced")
    (newcomer,) = set(pids) - {survivor}
    with gateway.served_by(newcomer):
        await get_text(http, gateway, HEALTHZ)
        # The dead process's websocket no longer counts; the survivor's still does.
        assert websocket_clients(await get_text(http, gateway, "/metrics")) == 1
    assert not sockets[1].closed
    for ws in sockets:
        await ws.close()
