"""A task's SSE stream (`GET /api/v1/tasks/{id}/stream`, `POST ...?stream=true`) against the
real gateway, a real worker and a local OpenAI stand-in: numbered events, replay after
`Last-Event-ID`, a reconnect in the middle of an AI reply, isolation, slow readers, the
event log pruned with its record, and the OpenAPI document's account of the stream."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import jsonschema_rs
import pytest
import redis
from claw_client import AsyncClawClient, ClawClient

from tests.support.api import ADMIN, ALICE, API_KEYS, BOB
from tests.support.fake_openai import FakeOpenAI, Fault
from tests.support.processes import database_url
from tests.support.publishing import Publish, publisher
from tests.support.sse import Event, events
from tests.support.waiting import async_wait_until
from workers.core.keys import EXPIRY_KEY, events_key, task_key
from workers.taskindex.lua_scripts import feed_call, prune_call, source

QUEUE = "tests_sse"
API = "/api/v1/tasks"


@pytest.fixture(scope="module")
def sse_redis_url(redis_url: str) -> str:
    """A database of its own: the suite's shared worker never takes our AI tasks."""
    return database_url(redis_url, 6)


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI.running(slow_words=40, slow_delay=0.03) as server:
        yield server


@pytest.fixture(scope="module")
def sse_worker(sse_redis_url, log_dir, fake_openai) -> Iterator[Any]:
    from tests.support.processes import start_worker

    queues = f"{QUEUE},ai_high_priority"
    env = fake_openai.env(AI_RATE_LIMIT="1000/s")
    worker = start_worker(sse_redis_url, log_dir, name="sse", queues=queues, env=env)
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
def sse_gateway(sse_redis_url, log_dir, sse_worker, fake_openai) -> Iterator[Any]:
    from tests.support.processes import start_gateway

    env = fake_openai.env(
        API_KEYS=API_KEYS, SSE_HEARTBEAT="0.5", SSE_BUFFER="10", SSE_WRITE_TIMEOUT="1"
    )
    gateway = start_gateway(sse_redis_url, log_dir, env=env)
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def publish(sse_redis_url, celery_app) -> Iterator[Publish]:
    """Publish a test task on the module's database (tests/support/publishing.py)."""
    with publisher(celery_app, sse_redis_url, QUEUE) as send:
        yield send


@pytest.fixture(scope="module")
def sse_redis(sse_redis_url) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(sse_redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture(scope="module")
def openapi(sse_gateway) -> dict[str, Any]:
    """The OpenAPI document the gateway serves."""
    with ClawClient(sse_gateway.base_url, ADMIN) as claw:
        answer = claw.request("GET", "/api/v1/openapi.json")
    assert answer.status_code == 200, answer.text
    return answer.json()


def json_schema(openapi: dict[str, Any], name: str) -> jsonschema_rs.Validator:
    """A validator of the document's component `name`: OpenAPI 3.0's schemas as JSON
    Schema (`nullable` as a null alternative, references into `definitions`), formats
    (date-time) checked."""

    def convert(node: Any) -> Any:
        if isinstance(node, list):
            return [convert(item) for item in node]
        if not isinstance(node, dict):
            return node
        out = {k: convert(v) for k, v in node.items() if k != "nullable"}
        if "$ref" in out:
            out["$ref"] = out["$ref"].replace("#/components/schemas/", "#/definitions/")
        return {"anyOf": [out, {"type": "null"}]} if node.get("nullable") else out

    definitions = {k: convert(v) for k, v in openapi["components"]["schemas"].items()}
    schema = {"$ref": f"#/definitions/{name}", "definitions": definitions}
    return jsonschema_rs.validator_for(schema, validate_formats=True)


def invalid(validator: jsonschema_rs.Validator, data: Any) -> list[str]:
    return [f"{e.message} at {list(e.instance_path)}" for e in validator.iter_errors(data)]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def raw_status(url: str, headers: list[str]) -> int:
    """The status of a GET whose header lines go out as UTF-8, byte for byte."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    lines = [f"GET {parts.path} HTTP/1.1", f"Host: {parts.netloc}", *headers, "Connection: close"]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    status = int((await reader.readline()).split()[1])
    writer.close()
    return status


def auth(token: str | None, **extra: str) -> dict[str, str]:
    return {**({"Authorization": f"Bearer {token}"} if token else {}), **extra}


async def read_all(
    resp: aiohttp.ClientResponse, until: int | None = None, timeout: float = 30.0
) -> list[Event]:
    """The stream's events until it closes (or `until` events), with a deadline."""
    got: list[Event] = []

    async def read() -> None:
        async for event in events(resp):
            got.append(event)
            if until is not None and len(got) >= until:
                return

    await asyncio.wait_for(read(), timeout)
    return got


async def resume_to_the_end(
    http: aiohttp.ClientSession, url: str, token: str, got: list[Event]
) -> int:
    """What a client does with a `resume` event (the gateway ended a stream the reader
    fell behind on; SSE_BUFFER is 10 here): reconnect after its position, until the end.
    Returns how many times it resumed."""
    resumes = 0
    deadline = time.monotonic() + 30
    while got and got[-1].name == "resume":
        resumes += 1
        position = got.pop().data["starting_after"]
        assert position == numbered(got)[-1]
        headers = auth(token, **{"Last-Event-ID": str(position)})
        async with http.get(url, headers=headers) as resp:
            got += await read_all(resp)
        assert time.monotonic() < deadline
    return resumes


def numbered(got: list[Event]) -> list[int]:
    return [e.id for e in got if e.id is not None]


async def test_a_stream_replays_the_log_then_follows_live_and_ends_with_the_result(
    http, sse_gateway, publish, sse_redis, key
) -> None:
    hold = f"{key}:go"
    task = publish("tests.stream", [20, hold, 5])
    url = f"{sse_gateway.base_url}{API}/{task.id}/stream"
    comments: list[str] = []
    async with http.get(url, headers=auth(ADMIN)) as resp:
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        got: list[Event] = []

        async def read() -> None:
            async for event in events(resp, comments):
                got.append(event)

        reader = asyncio.create_task(read())
        # Replayed from the log: the task emits 5 chunks, then waits for `hold` while the
        # stream sends heartbeats.
        await async_wait_until(
            lambda: asyncio.sleep(0, len([e for e in got if e.name == "chunk"]) == 5 and comments),
            10, what="5 chunks, then a heartbeat comment while the task waits",
        )  # fmt: skip
        sse_redis.set(hold, 1)
        try:
            await asyncio.wait_for(reader, 20)  # live, until the stream closes
        except TimeoutError:
            raise AssertionError([(e.id, e.name, e.data.get("state")) for e in got]) from None
    await resume_to_the_end(http, url, ADMIN, got)
    assert numbered(got) == list(range(1, len(got) + 1)), [(e.id, e.name) for e in got]
    assert [e.data["state"] for e in got if e.name == "state"] == ["PENDING", "STARTED", "SUCCESS"]
    assert "".join(e.data["text"] for e in got if e.name == "chunk") == "".join(
        f"c{i} " for i in range(20)
    )
    assert [e.data["percent"] for e in got if e.name == "progress"][-1] == 100.0
    final = got[-1]
    assert final.name == "state" and final.data["task"]["result"] == {"chunks": 20}
    assert final.data["task"]["status"] == "SUCCESS" and "keep-alive" in comments

    # Finished: the whole stream again from the start, or only what follows an id.
    async with http.get(f"{url}?starting_after=0", headers=auth(ADMIN)) as resp:
        again = await read_all(resp)
    assert [(e.id, e.name) for e in again] == [(e.id, e.name) for e in got]
    async with http.get(url, headers=auth(ADMIN, **{"Last-Event-ID": str(len(got) - 3)})) as resp:
        tail = await read_all(resp)
    assert numbered(tail) == [len(got) - 2, len(got) - 1, len(got)]
    async with http.get(url, headers=auth(ADMIN, **{"Last-Event-ID": str(len(got))})) as resp:
        # Past the end: 204, which tells an EventSource to stop reconnecting.
        assert resp.status == 204 and await resp.read() == b""


async def test_an_ai_reply_streamed_on_submission_survives_a_reconnect_in_the_middle(
    http, sse_gateway, fake_openai
) -> None:
    """`POST /ai/generate?stream=true`; the connection drops after a few chunks; the reader
    resumes with Last-Event-ID and gets every chunk exactly once."""
    body = {"conversation_id": f"c-{uuid.uuid4().hex[:8]}", "user_message": "Tell me [slow]"}
    submit = f"{sse_gateway.base_url}{API}/ai/generate?stream=true"
    async with http.post(submit, json=body, headers=auth(ALICE)) as resp:
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        first = await read_all(resp, until=1)
        assert first[0].name == "submitted" and first[0].id is None
        task_id = first[0].data["task_id"]
        before = await read_all(resp, until=8)  # then the connection drops
    assert any(e.name == "chunk" for e in before), [e.name for e in before]
    last = numbered(before)[-1]
    url = f"{sse_gateway.base_url}{API}/{task_id}/stream"
    async with http.get(url, headers=auth(ALICE, **{"Last-Event-ID": str(last)})) as resp:
        after = await read_all(resp)
    await resume_to_the_end(http, url, ALICE, after)
    whole = before + after
    assert numbered(whole) == list(range(1, len(whole) + 1))
    chunks = [e.data for e in whole if e.name == "chunk"]
    assert [c["index"] for c in chunks] == list(range(len(chunks)))
    final = whole[-1].data["task"]
    assert final["status"] == "SUCCESS"
    assert "".join(c["text"] for c in chunks) == final["result"]["response"]
    assert len(chunks) > 40  # the reply really streamed, token by token


async def test_the_stream_is_the_owners_alone_and_bad_positions_are_named(
    http, sse_gateway
) -> None:
    body = {"conversation_id": "c-iso", "user_message": "hi"}
    async with AsyncClawClient(sse_gateway.base_url, ALICE) as claw:
        task_id = (await claw.generate(**body))["task_id"]
    url = f"{sse_gateway.base_url}{API}/{task_id}/stream"
    async with http.get(url, headers=auth(BOB)) as resp:
        assert resp.status == 404 and (await resp.json())["error"] == "no such task"
    async with http.get(url) as resp:
        assert resp.status == 401
    async with http.get(f"{sse_gateway.base_url}{API}/{uuid.uuid4()}/stream",
                        headers=auth(ADMIN)) as resp:  # fmt: skip
        assert resp.status == 404
    async with http.get(url, headers=auth(ALICE, **{"Last-Event-ID": "x"})) as resp:
        assert resp.status == 400 and "Last-Event-ID" in (await resp.json())["details"]
    # '²' in UTF-8 (a client library would send it as Latin-1): a digit to str.isdigit,
    # not to int().
    assert await raw_status(url, [f"Authorization: Bearer {ALICE}", "Last-Event-ID: \u00b2"]) == 400
    async with http.get(f"{url}?starting_after=-1", headers=auth(ALICE)) as resp:
        assert resp.status == 400 and "starting_after" in (await resp.json())["details"]
    async with http.post(
        f"{sse_gateway.base_url}{API}/ai/generate?stream=true&wait=5", json=body,
        headers=auth(ALICE),
    ) as resp:  # fmt: skip
        assert resp.status == 400 and "stream" in (await resp.json())["details"]
    # The owner's stream works (and ends with the final state).
    async with http.get(url, headers=auth(ALICE)) as resp:
        got = await read_all(resp)
    assert got[-1].name == "state" and got[-1].data["state"] == "SUCCESS"


async def test_a_reader_told_to_resume_loses_nothing_and_a_stalled_one_holds_no_one(
    http, sse_gateway, publish, sse_redis, key
) -> None:
    """SSE_BUFFER=10: a burst of 300 chunks may overflow a reader's queue; it then gets a
    `resume` event with its position, reconnects from there and has every event once. A
    stalled reader (a socket that never reads) holds up neither the gateway nor this one."""
    hold = f"{key}:go"
    task = publish("tests.stream", [300, hold, 0])
    url = f"{sse_gateway.base_url}{API}/{task.id}/stream"
    host, port = sse_gateway.base_url.split("//")[1].split(":")
    _, stalled = await asyncio.open_connection(host, int(port))
    stalled.write(
        f"GET {API}/{task.id}/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}"
        "\r\n\r\n".encode()
    )
    got: list[Event] = []
    async with http.get(url, headers=auth(ADMIN)) as resp:
        got += await read_all(resp, until=1)  # PENDING or STARTED: the stream is open
        sse_redis.set(hold, 1)
        got += await read_all(resp)
    resumes = await resume_to_the_end(http, url, ADMIN, got)
    stalled.close()
    # (Whether the burst overflowed this reader's 10-event queue depends on the machine's
    # timing; tests/service/test_sse_watch.py checks the overflow itself.)
    print(f"resumed {resumes} times")
    assert numbered(got) == list(range(1, len(got) + 1))
    assert len([e for e in got if e.name == "chunk"]) == 300
    assert got[-1].data["task"]["result"] == {"chunks": 300}
    # The gateway still answers at once.
    async with http.get(f"{sse_gateway.base_url}/healthz") as resp:
        assert resp.status == 200


async def test_a_burst_past_sse_buffer_ends_the_stream_with_resume_and_resuming_loses_nothing(
    http, sse_gateway, publish, sse_redis, key, openapi
) -> None:
    """SSE_BUFFER=10. While the reader reads nothing, 40 chunks of its task reach the live
    feed at once (one transaction, as a worker flushing buffered output would write them:
    the gateway's feed reader gets them in one read, more than the stream's queue holds).
    When it reads again, its stream ends with `resume` (no id) naming its position and
    `slow reader`; resumed with Last-Event-ID, it has every event exactly once."""
    hold = f"{key}:go"
    task = publish("tests.stream", [3, hold, 0])  # STARTED, then waits for `hold`
    url = f"{sse_gateway.base_url}{API}/{task.id}/stream"

    async def started() -> bool:
        return sse_redis.llen(events_key(task.id)) == 2  # PENDING, STARTED

    await async_wait_until(started, 20, what="the task waiting for its hold key")
    feed = sse_redis.register_script(source("feed"))
    async with http.get(url, headers=auth(ADMIN)) as resp:
        got = await read_all(resp, until=2)  # the stream is open, past the log
        with sse_redis.pipeline() as burst:  # MULTI ... EXEC
            for i in range(40):
                keys, args = feed_call("chunk", task.id, {"text": f"b{i} "}, f"b{i} ", time.time())
                feed(keys=keys, args=args, client=burst)
            burst.execute()
        sse_redis.set(hold, 1)  # then the task's own 3 chunks and 3 progress events

        async def finished() -> bool:
            return sse_redis.llen(events_key(task.id)) == 2 + 40 + 6 + 1

        await async_wait_until(finished, 20, what="the burst and the task's end logged")
        got += await read_all(resp)
    resume = got[-1]
    assert resume.name == "resume" and resume.id is None, [(e.id, e.name) for e in got]
    assert resume.data == {"starting_after": numbered(got)[-1], "reason": "slow reader"}
    assert not invalid(json_schema(openapi, "TaskStreamResume"), resume.data)
    assert numbered(got) == list(range(1, len(got)))
    assert await resume_to_the_end(http, url, ADMIN, got) == 1
    assert numbered(got) == list(range(1, 2 + 40 + 6 + 1 + 1)) and len(got) == 49
    chunks = [e.data for e in got if e.name == "chunk"]
    assert [c["index"] for c in chunks] == list(range(43))
    assert "".join(c["text"] for c in chunks) == "".join(f"b{i} " for i in range(40)) + "c0 c1 c2 "
    assert got[-1].name == "state" and got[-1].data["task"]["result"] == {"chunks": 3}


async def test_a_pruned_task_takes_its_event_log_along_and_its_stream_answers_404(
    http, sse_gateway, publish, sse_redis
) -> None:
    task = publish("tests.stream", [2])
    url = f"{sse_gateway.base_url}{API}/{task.id}/stream"
    async with http.get(url, headers=auth(ADMIN)) as resp:
        got = await read_all(resp)
    assert got[-1].data["state"] == "SUCCESS" and sse_redis.exists(events_key(task.id))
    sse_redis.zadd(EXPIRY_KEY, {task.id: 0})  # its retention (TASK_HISTORY_TTL) is over
    prune = sse_redis.register_script(source("prune"))
    keys, args = prune_call(time.time(), 10)
    assert prune(keys=keys, args=args) == 1
    assert not sse_redis.exists(task_key(task.id)) and not sse_redis.exists(events_key(task.id))
    async with http.get(f"{url}?starting_after=0", headers=auth(ADMIN)) as resp:
        assert resp.status == 404


async def test_the_openapi_document_describes_the_stream_and_real_events_validate(
    http, sse_gateway, fake_openai, publish, openapi
) -> None:
    """The served document: the stream operation (200 text/event-stream, `starting_after`,
    the `Last-Event-ID` header), a submission's `stream` parameter and its `taskWebhook`
    callback with the three Standard Webhooks headers. Then events of real tasks (an AI
    reply submitted with `stream=true`, tags and metadata; a failed one; a cancelled one;
    one with progress) each validate against the schema the document names for them."""
    paths = openapi["paths"]
    stream_op = paths[f"{API}/{{task_id}}/stream"]["get"]
    assert "text/event-stream" in stream_op["responses"]["200"]["content"]
    params = {(p["in"], p["name"]) for p in stream_op["parameters"]}
    assert {("query", "starting_after"), ("header", "Last-Event-ID"), ("path", "task_id")} <= params
    for kind in ("ai/generate", "notifications/send"):
        submit_op = paths[f"{API}/{kind}"]["post"]
        assert ("query", "stream") in {(p["in"], p["name"]) for p in submit_op["parameters"]}
        assert "text/event-stream" in submit_op["responses"]["200"]["content"]
        [callback] = submit_op["callbacks"]["taskWebhook"].values()
        headers = {p["name"] for p in callback["post"]["parameters"] if p["in"] == "header"}
        assert headers == {"webhook-id", "webhook-timestamp", "webhook-signature"}
        body = callback["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": "#/components/schemas/TaskWebhookPayload"}
    numbered_event = json_schema(openapi, "TaskStreamEvent")
    submitted = json_schema(openapi, "SubmitResponse")

    marker = f"refuse-{uuid.uuid4().hex[:6]}"
    fake_openai.fail(marker, Fault(status=400, message="not for you"))
    body = {"conversation_id": f"c-{uuid.uuid4().hex[:8]}", "user_message": "Hi [slow]",
            "tags": ["docs"], "metadata": {"ticket": "T-1"}, "priority": 7}  # fmt: skip
    got: list[Event] = []
    async with http.post(
        f"{sse_gateway.base_url}{API}/ai/generate?stream=true", json=body, headers=auth(ALICE)
    ) as resp:
        got += await read_all(resp)
    async with AsyncClawClient(sse_gateway.base_url, ALICE) as claw:
        failed = await claw.generate("c-openapi", f"question {marker}")
        cancelled = await claw.generate("c-openapi", "later", countdown=3600)
        await claw.cancel(cancelled["task_id"])
        await claw.wait(failed["task_id"], timeout=20)
    progressing = publish("tests.stream", [2])
    for task_id, token in ((failed["task_id"], ALICE), (cancelled["task_id"], ALICE),
                           (progressing.id, ADMIN)):  # fmt: skip
        async with http.get(f"{sse_gateway.base_url}{API}/{task_id}/stream",
                            headers=auth(token)) as resp:  # fmt: skip
            got += await read_all(resp)
    assert got[0].name == "submitted" and not invalid(submitted, got[0].data)
    errors = {(e.id, e.name): invalid(numbered_event, e.data) for e in got[1:]}
    assert not {k: v for k, v in errors.items() if v}, [e.data for e in got]
    # What the events carried: each field the schema names was really seen.
    seen = {field for e in got[1:] for field in e.data}
    assert {"owner", "worker", "priority", "tags", "metadata", "result", "error", "error_type",
            "prev", "percent", "index", "text", "task", "ts"} <= seen, seen  # fmt: skip
    ended = {e.data["state"]: e.data for e in got if e.name == "state" and "task" in e.data}
    assert ended["FAILURE"]["error_type"] and "not for you" in ended["FAILURE"]["error"]
    assert ended["REVOKED"]["error_type"] == "Cancelled"
