"""The websocket live feed against the real gateway, real workers and Redis."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from base64 import b64encode
from datetime import datetime, timedelta

import aiohttp
import pytest

from tests.support.api import ADMIN, ALICE, API_KEYS, BOB, Api
from tests.support.waiting import async_wait_until

QUEUE = "tests_live"
WS = "/api/v1/tasks/ws"


@pytest.fixture(scope="module")
def live_gateway(redis_url, log_dir):
    from tests.support.processes import start_gateway

    g = start_gateway(
        redis_url, log_dir,
        env={"API_KEYS": API_KEYS, "WS_HEARTBEAT": "1", "WS_BUFFER": "200",
             "WS_STATS_INTERVAL": "0.5", "ALLOWED_ORIGINS": "https://ui.example.com"},
    )  # fmt: skip
    yield g
    g.stop()


@pytest.fixture(scope="module")
def live_worker(redis_url, log_dir):
    from tests.support.processes import start_worker

    w = start_worker(redis_url, log_dir, queues=QUEUE, concurrency=2, name="live")
    yield w
    w.stop()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


async def connect(http, gateway, token=ADMIN, query="", **kwargs):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    ws = await http.ws_connect(f"{gateway.base_url}{WS}{query}", headers=headers, **kwargs)
    hello = await ws.receive_json(timeout=5)
    assert hello["type"] == "hello"
    return ws


async def collect(ws, until, timeout=20.0):
    """Messages until `until(messages)` is true."""
    messages = []
    deadline = time.monotonic() + timeout
    while not until(messages):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"timed out; got {[m['type'] for m in messages]}"
        msg = await ws.receive(timeout=remaining)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise AssertionError(f"socket closed: {msg}")
        messages.append(json.loads(msg.data))
    return messages


def task_states(messages, task_id):
    return [m["state"] for m in messages if m["type"] == "task" and m["task_id"] == task_id]


def finished(task_id):
    return lambda ms: any(
        m["type"] == "task" and m["task_id"] == task_id and m["state"] == "SUCCESS" for m in ms
    )


async def test_subscriber_sees_pending_started_success_in_order_with_the_result(
    http, live_gateway, live_worker, celery_app
) -> None:
    ws = await connect(http, live_gateway, query=f"?queues={QUEUE}")
    task = celery_app.send_task("tests.now", queue=QUEUE)
    messages = await collect(ws, finished(task.id))
    assert task_states(messages, task.id) == ["PENDING", "STARTED", "SUCCESS"]
    done = next(m for m in messages if m["type"] == "task" and m["state"] == "SUCCESS")
    assert isinstance(done["result"], float) and done["worker"] == live_worker.hostname
    ids = [m["id"] for m in messages if "id" in m]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    assert all("ts" in m and "task_id" in m and "state" in m for m in messages)
    await ws.close()


async def test_progress_and_chunks_arrive_in_order(http, live_gateway, live_worker, celery_app):
    ws = await connect(http, live_gateway, query="?all=true")
    task = celery_app.send_task("tests.stream", args=[20], queue=QUEUE)
    messages = await collect(ws, finished(task.id))
    chunks = [m for m in messages if m["type"] == "chunk" and m["task_id"] == task.id]
    assert [c["index"] for c in chunks] == list(range(20))
    assert "".join(c["text"] for c in chunks) == "".join(f"c{i} " for i in range(20))
    progress = [m["percent"] for m in messages if m["type"] == "progress"]
    assert progress == sorted(progress) and progress[-1] == 100.0
    await ws.close()


async def test_late_subscriber_gets_snapshot_with_chunks_so_far_then_the_rest(
    http, live_gateway, live_worker, celery_app, rclient, key
) -> None:
    task = celery_app.send_task("tests.stream", args=[10, key, 5], queue=QUEUE)
    await async_wait_until(
        lambda: asyncio.sleep(0, rclient.llen(f"claw:task:{task.id}:chunks") == 5), 20
    )
    ws = await connect(http, live_gateway)
    await ws.send_json({"action": "subscribe", "task_ids": [task.id]})
    # Its snapshot. (Periodic stats may come before it, and so may a live event of the
    # task: the subscription takes effect before the snapshot is read, so that nothing
    # falls between them. Its worker's `received` too: workers send their task events in
    # batches every 20 ms, so it can reach the gateway after the chunks.) No chunk: the
    # five so far are the snapshot's, and the task waits before the sixth.
    first = await collect(ws, lambda ms: any(m["type"] == "snapshot" for m in ms), 5)
    snapshot = next(m for m in first if m["type"] == "snapshot")
    assert {m["type"] for m in first} <= {"stats", "progress", "received", "snapshot"}, first
    assert all(m["type"] == "stats" or m.get("task_id") == task.id for m in first), first
    assert snapshot["type"] == "snapshot" and snapshot["state"] == "STARTED"
    assert snapshot["chunks"] == [f"c{i} " for i in range(5)]
    rclient.set(key, 1)
    messages = await collect(ws, finished(task.id))
    later = [m["index"] for m in messages if m["type"] == "chunk"]
    assert later == list(range(5, 10))
    await ws.close()


async def test_reconnect_resumes_from_the_last_event_id(
    http, live_gateway, live_worker, celery_app
) -> None:
    ws = await connect(http, live_gateway, query=f"?queues={QUEUE}")
    first = celery_app.send_task("tests.now", queue=QUEUE)
    seen = await collect(ws, finished(first.id))
    last_id = seen[-1]["id"]
    await ws.close()
    missed = celery_app.send_task("tests.now", queue=QUEUE)  # while disconnected
    await async_wait_until(
        lambda: asyncio.sleep(0, missed.state == "SUCCESS"), 20, what="missed task done"
    )
    ws = await connect(http, live_gateway, query=f"?queues={QUEUE}&last_event_id={last_id}")
    replayed = await collect(ws, finished(missed.id))
    assert task_states(replayed, missed.id) == ["PENDING", "STARTED", "SUCCESS"]
    assert first.id not in {m.get("task_id") for m in replayed}
    # a finished task's snapshot on reconnect
    await ws.send_json({"action": "subscribe", "task_ids": [missed.id]})
    snap = await collect(ws, lambda ms: any(m["type"] == "snapshot" for m in ms))
    assert snap[-1]["state"] == "SUCCESS" and snap[-1]["task"]["result"]
    await ws.close()


async def test_resume_from_outside_the_window_gets_resync(http, live_gateway) -> None:
    ws = await connect(http, live_gateway, query="?last_event_id=1-0&all=true")
    messages = await collect(ws, lambda ms: any(m["type"] == "resync" for m in ms), 5)
    assert messages[-1]["reason"]
    await ws.close()


async def test_users_only_receive_their_own_tasks(http, live_gateway, live_worker) -> None:
    alice_ws = await connect(http, live_gateway, token=ALICE, query="?all=true")
    bob_ws = await connect(http, live_gateway, token=BOB, query="?all=true")
    alice = Api(http, live_gateway.base_url, ALICE)
    _, body = await alice.post(
        "/api/v1/tasks/ai/generate", json={"conversation_id": "c", "user_message": "m"}
    )
    await collect(alice_ws, lambda ms: any(m.get("task_id") == body["task_id"] for m in ms))
    # bob subscribing to alice's task by id learns nothing either
    await bob_ws.send_json({"action": "subscribe", "task_ids": [body["task_id"]]})
    snap = await collect(bob_ws, lambda ms: any(m["type"] == "snapshot" for m in ms), 5)
    assert snap[-1]["task"] is None
    assert not any(m.get("type") == "task" and m["task_id"] == body["task_id"] for m in snap)
    await asyncio.gather(alice_ws.close(), bob_ws.close())


async def test_auth_ticket_cookie_and_origin(http, live_gateway) -> None:
    url = f"{live_gateway.base_url}{WS}"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(url)
    assert refused.value.status == 401
    headers = {"Authorization": f"Bearer {ADMIN}", "Origin": "https://evil.example.com"}
    with pytest.raises(aiohttp.WSServerHandshakeError) as hijack:
        await http.ws_connect(url, headers=headers)
    assert hijack.value.status == 403
    ws = await connect(http, live_gateway, origin="https://ui.example.com")
    await ws.close()

    api = Api(http, live_gateway.base_url, ALICE)
    _, ticket = await api.post(f"{WS}/ticket")
    ws = await http.ws_connect(f"{url}?ticket={ticket['ticket']}")
    assert (await ws.receive_json(timeout=5))["principal"]["owner"] == "alice"
    await ws.close()
    with pytest.raises(aiohttp.WSServerHandshakeError) as reused:
        await http.ws_connect(f"{url}?ticket={ticket['ticket']}")
    assert reused.value.status == 401

    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.post(
            f"{live_gateway.base_url}/api/v1/session", json={"api_key": BOB}
        ) as resp:
            assert resp.status == 200
            assert "httponly" in resp.headers["Set-Cookie"].lower()
        origin = live_gateway.base_url
        ws = await browser.ws_connect(url, origin=origin)
        assert (await ws.receive_json(timeout=5))["principal"]["owner"] == "bob"
        await ws.close()
        # the cookie does not work for a state change from a foreign origin
        async with browser.post(
            f"{live_gateway.base_url}/api/v1/tasks/ai/generate",
            json={"conversation_id": "c", "user_message": "m"},
            headers={"Origin": "https://evil.example.com"},
        ) as resp:
            assert resp.status == 403
        async with browser.delete(
            f"{live_gateway.base_url}/api/v1/session", headers={"Origin": origin}
        ) as resp:
            assert resp.status == 200
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await browser.ws_connect(url, origin=origin)


def stalled_socket(gateway, token=ADMIN) -> socket.socket:
    """A websocket handshake, then a client that never reads again."""
    host, port = gateway.base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    key = b64encode(uuid.uuid4().bytes).decode()
    sock.sendall(
        (f"GET {WS}?all=true HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
         f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
         f"Authorization: Bearer {token}\r\n\r\n").encode()
    )  # fmt: skip
    assert b"101" in sock.recv(200)
    return sock


async def keep_reading(ws) -> None:
    while not ws.closed:
        await ws.receive()


async def metric(http, gateway, name):
    async with http.get(f"{gateway.base_url}/metrics",
                        headers={"Authorization": f"Bearer {ADMIN}"}) as resp:  # fmt: skip
        for line in (await resp.text()).splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


async def test_a_stalled_client_does_not_delay_others_and_is_dropped(
    http, live_gateway, live_worker, celery_app
) -> None:
    stalled = [stalled_socket(live_gateway) for _ in range(3)]
    try:
        ws = await connect(http, live_gateway, query="?all=true")
        started = time.monotonic()
        task = celery_app.send_task("tests.stream", args=[1500], queue=QUEUE)
        messages = await collect(ws, finished(task.id), timeout=60)
        chunks = [m for m in messages if m["type"] == "chunk" and m["task_id"] == task.id]
        resyncs = [m for m in messages if m["type"] == "resync"]
        # the live client kept up, the stalled ones were closed
        assert len(chunks) == 1500 and not resyncs
        assert time.monotonic() - started < 60
        # Keep reading (and so answering pings: WS_HEARTBEAT is 1 s here) while the stalled
        # ones are dealt with; a live client that stopped reading would be dropped too.
        reader = asyncio.create_task(keep_reading(ws))

        async def stalled_ones_gone():
            # At most the live client is left (on a CPU-starved machine it may itself miss
            # a 1 s heartbeat once its reading is done; it got everything above).
            value = await metric(http, live_gateway, "claw_websocket_clients")
            return value is not None and value <= 1.0

        # Dropped by the send-buffer bound, or by the heartbeat (1 s) they never answer;
        # under a loaded CI machine that can take a few heartbeats.
        await async_wait_until(stalled_ones_gone, 30, 0.2, "stalled clients dropped")
        reader.cancel()
        await ws.close()
    finally:
        for sock in stalled:
            sock.close()


async def test_a_dead_peer_is_dropped_within_two_heartbeats(http, live_gateway) -> None:
    before = await metric(http, live_gateway, "claw_websocket_clients")
    sock = stalled_socket(live_gateway)  # never answers pings
    try:

        async def counted(n):
            return await metric(http, live_gateway, "claw_websocket_clients") == n

        await async_wait_until(lambda: counted(before + 1), 5, 0.1, "client counted")
        dropped_from = time.monotonic()
        await async_wait_until(lambda: counted(before), 5, 0.1, "dead peer dropped")
        assert time.monotonic() - dropped_from <= 2.5  # heartbeat is 1 s
    finally:
        sock.close()


async def test_periodic_stats_and_worker_status(http, live_gateway, start_worker) -> None:
    ws = await connect(http, live_gateway, query="?all=true")
    stats = await collect(ws, lambda ms: any(m["type"] == "stats" for m in ms), 5)
    assert "total_tasks" in stats[-1]["stats"]

    def worker_message(state):
        return lambda ms: any(
            m["type"] == "worker" and m["hostname"].startswith("seen-") and m["state"] == state
            for m in ms
        )

    # The client keeps reading (and so answering the 1 s pings) while the worker starts.
    online = asyncio.create_task(collect(ws, worker_message("online"), 30))
    worker = await asyncio.to_thread(
        start_worker, queues="tests_live_other", concurrency=1, name="seen"
    )
    assert await online
    offline = asyncio.create_task(collect(ws, worker_message("offline"), 30))
    await asyncio.to_thread(worker.stop)
    offline = await offline
    assert offline
    await ws.close()


async def test_gateway_shutdown_closes_websockets_going_away(http, redis_url, log_dir) -> None:
    from tests.support.processes import start_gateway

    gateway = start_gateway(redis_url, log_dir, env={"API_KEYS": API_KEYS})
    try:
        ws = await connect(http, gateway)
        gateway.process.terminate()
        msg = await ws.receive(timeout=10)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == 1001
        assert gateway.process.wait(10) == 0
    finally:
        gateway.stop()


async def test_feed_fields_mean_what_rest_says_and_never_move_a_task_back(
    http, live_gateway, live_worker, celery_app, key
) -> None:
    """A default priority is 5 in the PENDING event as in REST; an error is REST's `error`
    (the message) and `error_type`, from the gateway (a cancel) and from a worker (a
    failure); `worker` is the one that ran the task, as in REST, and a `received` event
    (Celery's, over pub/sub, which may arrive after STARTED) names the worker that received
    it `received_by` and carries no state."""
    ws = await connect(http, live_gateway, query="?all=true")
    api = Api(http, live_gateway.base_url, ALICE)
    admin = Api(http, live_gateway.base_url, ADMIN)
    note = {"channel": "in_app", "recipient": "alice", "message": "m", "countdown": 300}
    status, body = await api.post("/api/v1/tasks/notifications/send", json=note)
    assert status == 202
    pending = await collect(ws, lambda ms: any(m.get("task_id") == body["task_id"] for m in ms))
    event = next(m for m in pending if m.get("task_id") == body["task_id"])
    _, rest = await api.get(f"/api/v1/tasks/status/{body['task_id']}")
    assert event["state"] == "PENDING" and event["priority"] == rest["priority"] == 5
    await api.post(f"/api/v1/tasks/cancel/{body['task_id']}")
    cancelled = await collect(ws, ended(body["task_id"], "REVOKED"))
    await same_error_as_rest(api, ended_event(cancelled, body["task_id"], "REVOKED"))

    failed = celery_app.send_task("tests.plain_transient", args=[key], queue=QUEUE)
    failure = await collect(ws, ended(failed.id, "FAILURE"))
    await same_error_as_rest(admin, ended_event(failure, failed.id, "FAILURE"))

    task = celery_app.send_task("tests.now", queue=QUEUE)
    messages = await collect(
        ws, lambda ms: finished(task.id)(ms) and any(received(m, task.id) for m in ms)
    )
    mine = [m for m in messages if m.get("task_id") == task.id]
    [got] = [m for m in mine if received(m, task.id)]
    assert got["state"] is None and got["received_by"] == live_worker.hostname
    assert "worker" not in got  # REST's `worker` is the one that ran it
    _, rest = await admin.get(f"/api/v1/tasks/status/{task.id}")
    ran = [m["worker"] for m in mine if m["type"] == "task" and m["state"] != "PENDING"]
    assert ran and set(ran) == {rest["worker"]} == {live_worker.hostname}
    # Every time on the feed is ISO 8601 in UTC, as in REST.
    assert all(datetime.fromisoformat(m["ts"]).utcoffset() == timedelta(0) for m in messages)
    assert task_states(messages, task.id) == ["PENDING", "STARTED", "SUCCESS"]
    await ws.close()


def received(message, task_id):
    return message["type"] == "received" and message.get("task_id") == task_id


def ended(task_id, state):
    return lambda ms: ended_event(ms, task_id, state) is not None


def ended_event(messages, task_id, state):
    return next((m for m in messages if m["type"] == "task" and m["task_id"] == task_id
                 and m["state"] == state), None)  # fmt: skip


async def same_error_as_rest(api, event) -> None:
    """The event's error fields are the status body's: `error` the message (a string),
    `error_type` its type."""
    _, rest = await api.get(f"/api/v1/tasks/status/{event['task_id']}")
    assert isinstance(event["error"], str) and event["error"], event
    assert (event["error"], event["error_type"]) == (rest["error"], rest["error_type"]), (
        event, rest)  # fmt: skip
