"""OpenTelemetry traces across processes: a real gateway and a real worker export to a
local OTLP/HTTP receiver; a submitted task's spans, from the HTTP request to the worker's
run and its call to OpenAI, share one trace, the one named on the task's status."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from tests.support.api import ALICE, API_KEYS, Api
from tests.support.fake_openai import FakeOpenAI
from tests.support.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.support.processes import database_url
from tests.support.waiting import async_wait_until

pytestmark = pytest.mark.slow

API = "/api/v1/tasks"
DB = 3  # no other test's gateway or worker uses it


@pytest.fixture(scope="module")
def traced_redis_url(redis_url: str) -> str:
    """A database of its own: the suite's shared worker never takes our tasks."""
    return database_url(redis_url, DB)


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    server = OtlpReceiver().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI.running() as server:
        yield server


@pytest.fixture(scope="module")
def traced_worker(traced_redis_url, log_dir, receiver, openai) -> Iterator[Any]:
    from tests.support.processes import start_worker

    worker = start_worker(
        traced_redis_url, log_dir, name="traced", concurrency=1, queues="ai_high_priority",
        env={**receiver.env(), **openai.env()},
    )  # fmt: skip
    yield worker
    worker.stop()


@pytest.fixture(scope="module")
def traced_gateway(traced_redis_url, log_dir, receiver, traced_worker) -> Iterator[Any]:
    from tests.support.processes import start_gateway

    gateway = start_gateway(traced_redis_url, log_dir, env={"API_KEYS": API_KEYS, **receiver.env()})
    yield gateway
    gateway.stop()


@pytest.fixture
async def alice(traced_gateway) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as http:
        yield Api(http, traced_gateway.base_url, ALICE)


async def test_the_worker_continues_the_trace_of_the_request_that_submitted_the_task(
    alice: Api, receiver: OtlpReceiver, openai: FakeOpenAI
) -> None:
    marker = f"secret-prompt-{uuid.uuid4().hex}"
    status, body = await alice.post(
        f"{API}/ai/generate", json={"conversation_id": "conv_trace", "user_message": marker}
    )
    assert status == 202, body
    task_id = body["task_id"]

    async def finished() -> dict[str, Any] | None:
        _, task = await alice.get(f"{API}/status/{task_id}")
        return task if task["status"] in ("SUCCESS", "FAILURE") else None

    task = await async_wait_until(finished, timeout=30, what=f"task {task_id} finished")
    assert task["status"] == "SUCCESS", task
    trace_id = task["trace_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id) and set(trace_id) != {"0"}

    completions = f"{openai.url}/chat/completions"

    async def whole_trace() -> dict[str, ReceivedSpan] | None:
        """The trace's spans this test looks at, once all of them were received."""
        spans = receiver.spans(trace_id)
        found = {
            "request": first(spans, "claw-gateway", "server", f"POST {API}/ai/generate"),
            "publish": first(spans, "claw-gateway", "producer", "apply_async/generate_ai_response"),
            "run": first(spans, "claw-worker", "consumer", "run/generate_ai_response"),
            "openai": first(spans, "claw-worker", "client", "POST", url=completions),
            "redis": first(spans, "claw-worker", "client", "EVALSHA"),
        }
        return found if all(found.values()) else None

    found = await async_wait_until(whole_trace, timeout=20, what=f"the spans of {trace_id}")
    request, publish, run = found["request"], found["publish"], found["run"]
    # One chain: the request, its publish, the worker's run of that message, its calls.
    assert request.parent_span_id == ""
    assert publish.parent_span_id == request.span_id
    assert publish.attributes["messaging.message.id"] == task_id
    assert run.parent_span_id == publish.span_id
    assert found["openai"].parent_span_id == run.span_id
    assert found["redis"].parent_span_id == run.span_id
    # Redis commands go without their arguments.
    statements = [s.attributes["db.statement"] for s in receiver.spans(trace_id)
                  if s.attributes.get("db.system") == "redis"]  # fmt: skip
    for line in "\n".join(statements).splitlines():
        assert re.fullmatch(r"[A-Z]+( [A-Z]+)?( \?)*", line), line
    # Every trace starts at a request: calls outside of one (the gateway's feed reads, a
    # pool process starting) are not exported as traces of their own.
    roots = {(s.service, s.kind) for s in receiver.spans() if not s.parent_span_id}
    assert roots == {("claw-gateway", "server")}
    # No tenant content in any span: the prompt is nowhere.
    assert not [s for s in receiver.spans() if marker in repr(s)]


def first(
    spans: list[ReceivedSpan], service: str, kind: str, name: str, *, url: str | None = None
) -> ReceivedSpan | None:
    """The first span of `service` of this kind and name (and URL, for HTTP clients)."""
    for span in spans:
        http_url = span.attributes.get("url.full") or span.attributes.get("http.url")
        if (span.service, span.kind, span.name) == (service, kind, name) and (
            url is None or http_url == url
        ):
            return span
    return None
