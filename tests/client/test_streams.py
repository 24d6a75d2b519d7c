"""The client's streams against the real gateway: every event once and in order across
the gateway's `resume` events and dropped connections (cut by the transport, as a network
would), a submission that streams, and `wait` on the stream, within its deadline."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis
from claw_client import AsyncClawClient, ClawClient, NotFound

from tests.support.api import ADMIN, ALICE, BOB
from tests.support.waiting import async_wait_until, wait_until

DROPPED = "connection dropped (by the test's transport)"


class Cut(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body that breaks after `budget` bytes, as a dropped connection does
    (mid-event, most of the time)."""

    def __init__(self, inner: Any, budget: int) -> None:
        self.inner, self.budget = inner, budget

    def __iter__(self) -> Iterator[bytes]:
        sent = 0
        for chunk in self.inner:
            yield chunk[: self.budget - sent]
            sent += len(chunk)
            if sent >= self.budget:
                raise httpx.RemoteProtocolError(DROPPED)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        sent = 0
        async for chunk in self.inner:
            yield chunk[: self.budget - sent]
            sent += len(chunk)
            if sent >= self.budget:
                raise httpx.RemoteProtocolError(DROPPED)

    def close(self) -> None:
        self.inner.close()

    async def aclose(self) -> None:
        await self.inner.aclose()


class Network:
    """What the client's transport saw: every request (method, path, Last-Event-ID); it
    cuts the first `drops` event streams after `budget` bytes, and answers 404 to the
    stream route when `streams` is off (a gateway without it)."""

    def __init__(self, drops: int = 0, budget: int = 0, streams: bool = True) -> None:
        self.drops, self.budget, self.streams = drops, budget, streams
        self.requests: list[tuple[str, str, str | None]] = []
        self.cut = 0

    def sent(self, request: httpx.Request) -> httpx.Response | None:
        self.requests.append(
            (request.method, request.url.path, request.headers.get("Last-Event-ID"))
        )
        if not self.streams and request.url.path.endswith("/stream"):
            return httpx.Response(404, json={"error": "Not Found"})
        return None

    def received(self, response: httpx.Response) -> httpx.Response:
        if response.headers.get("Content-Type", "").startswith("text/event-stream"):
            if self.cut < self.drops:
                self.cut += 1
                response.stream = Cut(response.stream, self.budget)
        return response

    def count(self, path_part: str) -> int:
        return sum(path_part in path for _, path, _ in self.requests)

    def transport(self) -> httpx.BaseTransport:
        network = self

        class Transport(httpx.HTTPTransport):
            def handle_request(self, request: httpx.Request) -> httpx.Response:
                refused = network.sent(request)
                return refused or network.received(super().handle_request(request))

        return Transport()

    def async_transport(self) -> httpx.AsyncBaseTransport:
        network = self

        class Transport(httpx.AsyncHTTPTransport):
            async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
                refused = network.sent(request)
                return refused or network.received(await super().handle_async_request(request))

        return Transport()


@pytest.fixture(scope="module")
def client_redis(client_redis_url) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(client_redis_url, decode_responses=True)
    yield client
    client.close()


def held_stream(publish: Any, chunks: int = 6, hold_after: int = 2) -> tuple[str, str]:
    """A `tests.stream` task (only ADMIN's key sees it) that stops before chunk
    `hold_after` until its key is set: (task id, key)."""
    hold = f"hold:{uuid.uuid4().hex}"
    return publish("tests.stream", [chunks, hold, hold_after]).id, hold


def test_a_stream_follows_resume_events_and_yields_each_event_once(
    gateway, publish, client_redis
) -> None:
    """The gateway ends a stream a second old with `resume` (SSE_MAX_AGE), and one 10
    events behind (SSE_BUFFER; a burst of 600 may do it): the client reconnects each time
    with Last-Event-ID and hands over each event once. The task holds until the client
    has reconnected, then bursts 300 chunks."""
    task_id, hold = held_stream(publish, chunks=300, hold_after=0)
    network = Network()

    def release_once_resumed() -> None:
        wait_until(lambda: network.count("/stream") >= 2, 10, what="a reconnection")
        client_redis.set(hold, 1)

    with (
        ClawClient(gateway.base_url, ADMIN, transport=network.transport()) as admin,
        ThreadPoolExecutor(1) as pool,
    ):
        released = pool.submit(release_once_resumed)
        events = list(admin.stream(task_id))
        released.result()
    ids = [e.id for e in events]
    assert ids == list(range(1, len(events) + 1))
    assert [e.data["index"] for e in events if e.event == "chunk"] == list(range(300))
    assert events[-1].final and events[-1].data["task"]["result"] == {"chunks": 300}
    assert "resume" not in {e.event for e in events}  # the client's business, not the caller's
    resumed_from = [last for _, path, last in network.requests if path.endswith("/stream")][1:]
    assert resumed_from and all(resumed_from)
    assert [int(n) for n in resumed_from] == sorted(int(n) for n in resumed_from)
    # From a position: only what follows; past the end: nothing (the gateway answers 204).
    with ClawClient(gateway.base_url, ADMIN) as admin:
        assert [e.id for e in admin.stream(task_id, starting_after=len(events) - 2)] == ids[-2:]
        assert list(admin.stream(task_id, starting_after=len(events))) == []


def test_a_dropped_connection_resumes_after_the_last_event_seen(gateway, publish) -> None:
    task_id = publish("tests.stream", [40]).id
    network = Network(drops=6, budget=700)
    with ClawClient(gateway.base_url, ADMIN, transport=network.transport()) as admin:
        events = list(admin.stream(task_id))
    assert [e.id for e in events] == list(range(1, len(events) + 1))
    assert [e.data["text"] for e in events if e.event == "chunk"] == [f"c{i} " for i in range(40)]
    assert events[-1].final and events[-1].data["task"]["status"] == "SUCCESS"
    # Seven connections; each reconnection names the last event the one before delivered.
    lasts = [last for method, path, last in network.requests if path.endswith("/stream")]
    assert len(lasts) == 7 and lasts[0] is None
    delivered = [int(last) for last in lasts[1:]]
    assert delivered == sorted(delivered) and all(n >= 1 for n in delivered)


async def test_the_async_client_resumes_a_dropped_stream_too(gateway, publish) -> None:
    task_id = publish("tests.stream", [20]).id
    network = Network(drops=3, budget=700)
    transport = network.async_transport()
    async with AsyncClawClient(gateway.base_url, ADMIN, transport=transport) as admin:
        events = [e async for e in admin.stream(task_id)]
    assert [e.id for e in events] == list(range(1, len(events) + 1))
    assert [e.data["index"] for e in events if e.event == "chunk"] == list(range(20))
    assert events[-1].final and network.count("/stream") == 4


def test_generate_stream_submits_then_streams_and_resumes_on_the_task_stream(gateway) -> None:
    """The POST ?stream=true answer is cut after its `submitted` event: the client goes on
    with GET /tasks/{id}/stream."""
    network = Network(drops=1, budget=400)
    with ClawClient(gateway.base_url, ALICE, transport=network.transport()) as claw:
        events = list(claw.generate_stream("c-gen", "Tell me [slow]"))
    assert events[0].event == "submitted" and events[0].id is None
    task_id = events[0].data["task_id"]
    assert [e.id for e in events[1:]] == list(range(1, len(events)))
    final = events[-1].data["task"]
    assert final["task_id"] == task_id and final["status"] == "SUCCESS"
    text = "".join(e.data["text"] for e in events if e.event == "chunk")
    assert text == final["result"]["response"] and "more29" in text
    methods = [(method, path.rsplit("/", 1)[-1]) for method, path, _ in network.requests]
    assert methods[0] == ("POST", "generate") and set(methods[1:]) == {("GET", "stream")}


async def test_the_async_client_submits_and_streams_an_ai_reply(async_alice) -> None:
    events = [e async for e in async_alice.generate_stream("c-async", "Tell me [slow]")]
    assert events[0].event == "submitted" and events[0].id is None
    text = "".join(e.data["text"] for e in events if e.event == "chunk")
    final = events[-1].data["task"]
    assert final["status"] == "SUCCESS" and text == final["result"]["response"]
    assert [e.id for e in events[1:]] == list(range(1, len(events)))
    assert [e.data["state"] for e in events if e.event == "state"] == [
        "PENDING", "STARTED", "SUCCESS"
    ]  # fmt: skip


def test_a_stream_of_another_owners_task_or_an_unknown_one_is_not_found(gateway, alice) -> None:
    task = alice.generate("c-mine", "mine", countdown=600)
    with ClawClient(gateway.base_url, BOB) as bob, pytest.raises(NotFound):
        next(bob.stream(task["task_id"]))
    with pytest.raises(NotFound):
        list(alice.stream(str(uuid.uuid4())))
    alice.cancel(task["task_id"])


def test_wait_takes_the_final_state_from_the_stream_without_polling(
    gateway, publish, client_redis
) -> None:
    task_id, hold = held_stream(publish)
    network = Network()
    with (
        ClawClient(gateway.base_url, ADMIN, transport=network.transport()) as admin,
        ThreadPoolExecutor(1) as pool,
    ):
        waiting = pool.submit(admin.wait, task_id, 20)
        wait_until(lambda: network.count("/stream"), what="wait to open the stream")
        client_redis.set(hold, 1)
        done = waiting.result(timeout=20)
        assert done == admin.status(task_id)
    assert done["status"] == "SUCCESS" and done["result"] == {"chunks": 6}
    assert network.count("/status/") == 2  # the first look, and ours above: no polling
    # One stream, resumed if it outlived this gateway's SSE_MAX_AGE (1 s) on a busy machine.
    assert network.count("/stream") >= 1


def test_wait_polls_the_status_where_the_gateway_has_no_stream(
    gateway, publish, client_redis
) -> None:
    task_id, hold = held_stream(publish)
    network = Network(streams=False)
    with (
        ClawClient(gateway.base_url, ADMIN, transport=network.transport()) as admin,
        ThreadPoolExecutor(1) as pool,
    ):
        waiting = pool.submit(admin.wait, task_id, 20)
        wait_until(lambda: network.count("/status/") >= 3, what="wait to poll")
        client_redis.set(hold, 1)
        assert waiting.result(timeout=20)["status"] == "SUCCESS"
    assert network.count("/stream") == 1


def test_wait_raises_timeout_error_at_its_deadline(alice) -> None:
    task = alice.generate("c-later", "later", countdown=600)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="has not finished after 1 s"):
        alice.wait(task["task_id"], timeout=1)
    assert 1 <= time.monotonic() - started < 3.5  # not a 5 s read slice, nor 60 s
    with pytest.raises(NotFound):
        alice.wait(str(uuid.uuid4()), timeout=1)
    alice.cancel(task["task_id"])


async def test_the_async_wait_follows_the_stream_and_keeps_its_deadline(
    gateway, publish, client_redis, async_alice
) -> None:
    task_id, hold = held_stream(publish)
    network = Network()
    transport = network.async_transport()
    async with AsyncClawClient(gateway.base_url, ADMIN, transport=transport) as admin:
        waiting = asyncio.create_task(admin.wait(task_id, 20))

        async def streaming() -> bool:
            return network.count("/stream") == 1

        await async_wait_until(streaming, what="wait to open the stream")
        client_redis.set(hold, 1)
        assert (await waiting)["result"] == {"chunks": 6}
    assert network.count("/status/") == 1
    task = await async_alice.generate("c-later", "later", countdown=600)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await async_alice.wait(task["task_id"], timeout=0.5)
    assert 0.5 <= time.monotonic() - started < 3
    await async_alice.cancel(task["task_id"])
