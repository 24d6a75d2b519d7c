"""The gateway's authentication, sessions, websockets and operators' data, on a Redis
database of their own (issue 12, holes 4 to 7 and 9): in-process gateways, and gateway
processes where keys change across a restart or sessions span replicas.

- development mode (no API_KEYS) refuses cross-site changes and foreign Host headers;
- a session (cookie, websocket ticket) follows its API key: removed, it ends; demoted, the
  role changes at once;
- logout closes the session's websockets with 4001 on every gateway replica, and an
  expired session's socket gets 4001 too;
- one websocket cannot subscribe to unbounded lists;
- /metrics, the health report, `worker` messages and platform-wide stats are for admins
  (and /metrics for the METRICS_TOKEN), never for user keys.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
import redis

from service.sessions import session_digest
from tests.security.conftest import database_url
from tests.support.api import ADMIN, ALICE, API_KEYS, BOB, InProcessGateway
from tests.support.processes import Gateway, start_gateway, start_gateways, start_worker, stop_all
from tests.support.waiting import async_wait_until
from workers.core.keys import HEALTH_REPORT_KEY, session_key

pytestmark = pytest.mark.slow

DB = 20  # no other test's gateway or worker uses it
T = "/api/v1/tasks"
WS = f"{T}/ws"
SESSION = "/api/v1/session"
METRICS_TOKEN = "metrics-token-0123456789"
CAROL = "carol-token-0123456789"
ALLOWED_ORIGIN = "http://dashboard.example.test"


@pytest.fixture(scope="module")
def db_url(redis_url: str) -> Iterator[str]:
    url = database_url(redis_url, DB)
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


@pytest.fixture
async def dev_gateway(db_url: str, serve_gateway) -> InProcessGateway:
    # API_KEYS is empty in the suite: development.
    return await serve_gateway(redis_url=db_url, env={"ALLOWED_ORIGINS": ALLOWED_ORIGIN})


@pytest.fixture
async def keyed_gateway(db_url: str, serve_gateway) -> InProcessGateway:
    env = {"API_KEYS": API_KEYS, "METRICS_TOKEN": METRICS_TOKEN, "WS_STATS_INTERVAL": "0.5"}
    return await serve_gateway(redis_url=db_url, env=env)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def browser() -> aiohttp.ClientSession:
    """A client with a cookie jar that keeps cookies of IP hosts, like a browser's."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def port_of(gateway: Gateway | InProcessGateway) -> int:
    return int(gateway.base_url.rsplit(":", 1)[1])


async def call(
    http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any]:
    async with http.request(method, url, **kwargs) as resp:
        body = await (resp.json() if resp.content_type == "application/json" else resp.text())
        return resp.status, body


async def login(http: aiohttp.ClientSession, gateway: Gateway | InProcessGateway, key: str) -> str:
    """Log in; the session cookie's value."""
    async with http.post(f"{gateway.base_url}{SESSION}", json={"api_key": key}) as resp:
        assert resp.status == 200, await resp.text()
        return resp.cookies["claw_session"].value


async def hello(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    first = await ws.receive_json(timeout=5)
    assert first["type"] == "hello"
    return first


async def until(
    ws: aiohttp.ClientWebSocketResponse, done: Any, timeout: float = 10.0
) -> list[dict[str, Any]]:
    """Messages until `done(messages)`; fails if the socket closes first."""
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not done(messages):
        msg = await ws.receive(timeout=max(deadline - time.monotonic(), 0.01))
        assert msg.type == aiohttp.WSMsgType.TEXT, f"socket ended: {msg}"
        messages.append(json.loads(msg.data))
    return messages


async def round_trip(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    """What the server sent before answering a ping (it handles frames in order)."""
    await ws.send_json({"action": "ping"})
    messages = await until(ws, lambda ms: any(m["type"] == "pong" for m in ms))
    return [m for m in messages if m["type"] != "stats"]


async def closed_with(ws: aiohttp.ClientWebSocketResponse, timeout: float) -> int | None:
    """Read until the server closes the socket; the close code it sent."""
    deadline = time.monotonic() + timeout
    while True:
        msg = await ws.receive(timeout=max(deadline - time.monotonic(), 0.01))
        if msg.type == aiohttp.WSMsgType.CLOSE:
            return msg.data  # the code the server sent
        if msg.type == aiohttp.WSMsgType.CLOSED:
            return ws.close_code


# --- hole 4: development mode --------------------------------------------------------


async def test_development_mode_refuses_changes_sent_from_another_site(
    http: aiohttp.ClientSession, dev_gateway: InProcessGateway
) -> None:
    base = dev_gateway.base_url
    status, body = await call(
        http, "POST", f"{base}{T}/ai/generate",
        json={"conversation_id": "dev-csrf", "user_message": "hello"},
    )  # fmt: skip
    assert status == 202, body
    task_id = body["task_id"]
    evil = {"Origin": "http://evil.example", "Content-Type": "text/plain"}

    for path in (f"{T}/cancel/{task_id}", f"{T}/workers/shutdown", f"{T}/retry/{task_id}"):
        status, body = await call(http, "POST", f"{base}{path}", headers=evil, data="x")
        assert status == 403, (path, status, body)
        assert "cross-origin" in body["error"]
    status, body = await call(http, "GET", f"{base}{T}/status/{task_id}")
    assert status == 200 and body["status"] == "PENDING"  # not cancelled
    with pytest.raises(aiohttp.WSServerHandshakeError) as hijack:
        await http.ws_connect(f"{base}{WS}", origin="http://evil.example")
    assert hijack.value.status == 403

    # The gateway's own page, and tools that send no Origin, still work.
    status, body = await call(http, "POST", f"{base}{T}/cancel/{task_id}", headers={"Origin": base})
    assert status == 200 and body["status"] == "REVOKED", body
    ws = await http.ws_connect(f"{base}{WS}", origin=base)
    assert (await hello(ws))["principal"]["role"] == "admin"
    await ws.close()


async def test_development_mode_answers_only_its_own_loopback_host_names(
    http: aiohttp.ClientSession, dev_gateway: InProcessGateway
) -> None:
    base, port = dev_gateway.base_url, port_of(dev_gateway)
    # DNS rebinding: the attacker's name now resolves to 127.0.0.1, so the browser sends
    # the attacker's name as Host and as Origin.
    rebound = f"rebind.evil.example:{port}"
    headers = {"Host": rebound, "Origin": f"http://{rebound}"}
    for method, path in (("GET", f"{T}/list"), ("GET", f"{T}/stats"), ("POST", f"{T}/ai/generate")):
        status, body = await call(
            http, method, f"{base}{path}", headers=headers,
            json={"conversation_id": "c", "user_message": "m"} if method == "POST" else None,
        )  # fmt: skip
        assert status in (403, 421), (path, status, body)
        assert "loopback" in body["error"]
    with pytest.raises(aiohttp.WSServerHandshakeError) as upgrade:
        await http.ws_connect(f"{base}{WS}", headers=headers)
    assert upgrade.value.status in (403, 421)

    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "localhost"):
        status, body = await call(http, "GET", f"{base}{T}/list", headers={"Host": host})
        assert status == 200, (host, status, body)
    # A name the operator configured (ALLOWED_ORIGINS) is ours too.
    status, body = await call(
        http, "GET", f"{base}{T}/list",
        headers={"Host": f"dashboard.example.test:{port}", "Origin": ALLOWED_ORIGIN},
    )  # fmt: skip
    assert status == 200, body


# --- hole 5: sessions follow their key -------------------------------------------------


async def test_sessions_and_tickets_end_with_their_key_and_follow_its_role(
    db_url: str, log_dir, http: aiohttp.ClientSession
) -> None:
    before = start_gateway(db_url, log_dir, env={"API_KEYS": f"{API_KEYS},{CAROL}:carol:admin"})
    async with browser() as alice, browser() as carol:
        try:
            alice_cookie = await login(alice, before, ALICE)
            await login(carol, before, CAROL)
            _, ticket = await call(
                alice, "POST", f"{before.base_url}{WS}/ticket", headers={"Origin": before.base_url}
            )
            status, me = await call(carol, "GET", f"{before.base_url}{SESSION}")
            assert status == 200 and me["role"] == "admin"
        finally:
            before.stop()
        # Alice's key is removed, carol is demoted to a user.
        kept = ",".join(k for k in API_KEYS.split(",") if not k.startswith(ALICE))
        after = start_gateway(db_url, log_dir, env={"API_KEYS": f"{kept},{CAROL}:carol:user"})
        try:
            base = after.base_url
            status, body = await call(alice, "GET", f"{base}{T}/list")
            assert status == 401, body
            rclient = redis.Redis.from_url(db_url)
            try:
                assert not rclient.exists(session_key(session_digest(alice_cookie)))
            finally:
                rclient.close()
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(f"{base}{WS}?ticket={ticket['ticket']}")
            assert refused.value.status == 401

            status, me = await call(carol, "GET", f"{base}{SESSION}")
            assert status == 200 and me["role"] == "user", me
            status, body = await call(carol, "GET", f"{base}{T}/workers")
            assert status == 403, body
            ws = await carol.ws_connect(f"{base}{WS}", origin=base)
            assert (await hello(ws))["principal"] == {"owner": "carol", "role": "user"}
            await ws.close()
        finally:
            after.stop()


# --- hole 6: logout closes the session's websockets ------------------------------------


@pytest.fixture
def replicas(db_url: str, log_dir) -> Iterator[tuple[Gateway, Gateway]]:
    # Stats (and the periodic session check) every minute: within the test's deadline
    # only the logout's announcement can close a socket.
    env = {"API_KEYS": API_KEYS, "WS_STATS_INTERVAL": "60"}
    first, second = start_gateways(db_url, log_dir, 2, env=env)
    yield first, second
    stop_all([first, second])


async def test_logout_closes_the_sessions_websockets_with_4001_on_every_replica(
    http: aiohttp.ClientSession, replicas: tuple[Gateway, Gateway]
) -> None:
    one, two = replicas
    async with browser() as tab:
        await login(tab, one, BOB)
        cookie_here = await tab.ws_connect(f"{one.base_url}{WS}?all=true", origin=one.base_url)
        cookie_there = await tab.ws_connect(f"{two.base_url}{WS}?all=true", origin=two.base_url)
        _, ticket = await call(
            tab, "POST", f"{two.base_url}{WS}/ticket", headers={"Origin": two.base_url}
        )
        by_ticket = await http.ws_connect(f"{one.base_url}{WS}?ticket={ticket['ticket']}")
        by_key = await http.ws_connect(f"{one.base_url}{WS}", headers=bearer(BOB))
        for ws in (cookie_here, cookie_there, by_ticket, by_key):
            assert (await hello(ws))["principal"]["owner"] == "bob"

        status, _ = await call(
            tab, "DELETE", f"{two.base_url}{SESSION}", headers={"Origin": two.base_url}
        )
        assert status == 200
        codes = await asyncio.gather(
            *(closed_with(ws, 5) for ws in (cookie_here, cookie_there, by_ticket))
        )
        assert codes == [4001, 4001, 4001]
        # A key's own socket has no session: it stays.
        assert [m["type"] for m in await round_trip(by_key)] == ["pong"]
        await by_key.close()


async def test_a_websocket_whose_session_expired_is_closed_with_4001(
    keyed_gateway: InProcessGateway, db_url: str
) -> None:
    base = keyed_gateway.base_url
    async with browser() as tab:
        cookie = await login(tab, keyed_gateway, ALICE)
        ws = await tab.ws_connect(f"{base}{WS}", origin=base)
        await hello(ws)
        rclient = redis.Redis.from_url(db_url)
        try:
            # What the session's TTL does in Redis, without the logout's announcement.
            assert rclient.delete(session_key(session_digest(cookie))) == 1
        finally:
            rclient.close()
        assert await closed_with(ws, 10) == 4001


# --- hole 7: bounded subscriptions -----------------------------------------------------


async def test_subscriptions_are_capped_per_socket_and_the_gateway_keeps_answering(
    http: aiohttp.ClientSession, keyed_gateway: InProcessGateway
) -> None:
    base = keyed_gateway.base_url
    ws = await http.ws_connect(f"{base}{WS}", headers=bearer(ALICE))
    await hello(ws)

    def refused(messages: list[dict[str, Any]], field: str, cap: int) -> None:
        errors = [m for m in messages if m["type"] == "error"]
        assert len(errors) == 1, messages
        assert field in errors[0]["error"] and str(cap) in errors[0]["error"]
        assert errors[0]["limit"] == {field: cap}

    names = [f"name-{i}" for i in range(101)]
    await ws.send_json({"action": "subscribe", "names": names})
    refused(await round_trip(ws), "names", 100)
    # Nothing of the refused subscribe was kept: exactly the cap still fits, then no more.
    await ws.send_json({"action": "subscribe", "names": names[:100]})
    assert [m["type"] for m in await round_trip(ws)] == ["pong"]
    await ws.send_json({"action": "subscribe", "names": ["one-more"]})
    refused(await round_trip(ws), "names", 100)
    await ws.send_json({"action": "subscribe", "queues": [f"q{i}" for i in range(101)]})
    refused(await round_trip(ws), "queues", 100)
    await ws.send_json({"action": "subscribe", "task_ids": [f"t{i}" for i in range(1001)]})
    refused(await round_trip(ws), "task_ids", 1000)
    await ws.send_json({"action": "subscribe", "names": "not-a-list"})
    errors = [m for m in await round_trip(ws) if m["type"] == "error"]
    assert errors and "names" in errors[0]["details"], errors

    # A frame bigger than the cap closes the socket (1009) without being parsed.
    await ws.send_str(json.dumps({"action": "subscribe", "names": ["x" * 200] * 400}))
    assert await closed_with(ws, 5) == 1009
    status, body = await call(http, "GET", f"{base}/healthz")
    assert status == 200 and body["redis"] == "ok"  # (degraded: no worker runs here)
    again = await http.ws_connect(f"{base}{WS}", headers=bearer(ALICE))
    await hello(again)
    await again.close()


# --- hole 9: operators' data -----------------------------------------------------------


async def test_metrics_and_the_health_report_need_an_admin_key_or_the_metrics_token(
    http: aiohttp.ClientSession, keyed_gateway: InProcessGateway, db_url: str
) -> None:
    base = keyed_gateway.base_url
    rclient = redis.Redis.from_url(db_url)
    try:
        report = {"checked_at": time.time(), "workers": {"w@secret-host": {}}, "lost": []}
        rclient.set(HEALTH_REPORT_KEY, json.dumps(report))
    finally:
        rclient.close()

    for user in (ALICE, BOB):
        status, body = await call(http, "GET", f"{base}/metrics", headers=bearer(user))
        assert status == 403, body
        status, body = await call(http, "GET", f"{base}{T}/health", headers=bearer(user))
        assert status == 403 and "secret-host" not in json.dumps(body), body
    status, _ = await call(http, "GET", f"{base}/metrics")
    assert status == 401

    status, body = await call(http, "GET", f"{base}/metrics", headers=bearer(ADMIN))
    assert status == 200 and "claw_tasks" in body
    status, body = await call(http, "GET", f"{base}/metrics", headers=bearer(METRICS_TOKEN))
    assert status == 200 and "claw_queue_depth" in body
    status, body = await call(http, "GET", f"{base}{T}/health", headers=bearer(ADMIN))
    assert status == 200 and "secret-host" in json.dumps(body)
    # The scraper's token opens /metrics and nothing else.
    for path in (f"{T}/health", f"{T}/list", f"{T}/stats"):
        status, body = await call(http, "GET", f"{base}{path}", headers=bearer(METRICS_TOKEN))
        assert status == 401, (path, body)


async def test_user_sockets_get_no_worker_messages_and_only_their_own_stats(
    http: aiohttp.ClientSession, keyed_gateway: InProcessGateway, db_url: str, log_dir
) -> None:
    base = keyed_gateway.base_url
    admin = await http.ws_connect(f"{base}{WS}?all=true", headers=bearer(ADMIN))
    user = await http.ws_connect(f"{base}{WS}?all=true", headers=bearer(ALICE))
    await asyncio.gather(hello(admin), hello(user))

    def stats(messages: list[dict[str, Any]]) -> bool:
        return any(m["type"] == "stats" for m in messages)

    admin_stats = next(m for m in await until(admin, stats) if m["type"] == "stats")
    user_stats = next(m for m in await until(user, stats) if m["type"] == "stats")
    assert {"workers", "queues"} <= admin_stats["stats"].keys()
    assert "total_tasks" in user_stats["stats"]
    assert not {"workers", "queues", "tasks_per_minute"} & user_stats["stats"].keys()

    # Both keep reading (the gateway pings) while a worker comes online.
    def online(messages: list[dict[str, Any]]) -> bool:
        return any(m["type"] == "worker" and m["state"] == "online" for m in messages)

    seen_by_admin = asyncio.create_task(until(admin, online, 30))
    seen_by_user: list[dict[str, Any]] = []

    async def read_user() -> None:
        while not user.closed:
            msg = await user.receive()
            if msg.type == aiohttp.WSMsgType.TEXT:
                seen_by_user.append(json.loads(msg.data))

    reader = asyncio.create_task(read_user())
    worker = await asyncio.to_thread(
        start_worker, db_url, log_dir, queues="tests_gateway_auth", concurrency=1, name="auth"
    )
    try:
        await seen_by_admin
        # The user's copy, if any, was queued with the admin's: after it comes a pong.
        await user.send_json({"action": "ping"})
        await async_wait_until(
            lambda: asyncio.sleep(0, any(m["type"] == "pong" for m in seen_by_user)), 5
        )
        assert not [m for m in seen_by_user if m["type"] == "worker"], seen_by_user
        assert not any(
            {"workers", "queues"} & m["stats"].keys() for m in seen_by_user if m["type"] == "stats"
        )
    finally:
        reader.cancel()
        await asyncio.to_thread(worker.stop)
        await asyncio.gather(admin.close(), user.close())
