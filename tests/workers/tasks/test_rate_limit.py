"""The platform-wide rate limit holds across workers; deferred tasks are not failed; under
contention each owner gets its share of the limit, alone an owner gets all of it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from types import SimpleNamespace

import aiohttp
import pytest
import redis

from tests.security.conftest import database_url
from tests.support.api import ALICE, API_KEYS, BOB, Api
from tests.support.waiting import async_wait_until, wait_for_state
from workers.ai.conversations import ConversationStore
from workers.core import queues
from workers.runtime.rate_limit import Rate, parse_rate
from workers.taskindex.index import task_key

QUEUE = "tests_rate_limit"
LIMIT, WINDOW = 2, 1.0


@pytest.fixture(scope="module")
def two_workers(redis_url, log_dir):
    from tests.support.processes import start_workers, stop_all

    env = {"OPENAI_API_KEY": "", "AI_RATE_LIMIT": f"{LIMIT}/{WINDOW:g}s"}
    spec = {"queues": QUEUE, "concurrency": 2, "env": env}
    workers = start_workers(redis_url, log_dir, *({**spec, "name": f"rl{i}"} for i in range(2)))
    yield workers
    stop_all(workers)


def test_rates_parse() -> None:
    assert parse_rate("10/m") == Rate(10, 60) and parse_rate("3/2s") == Rate(3, 2)
    # Celery's own forms: a bare number is per second, a fraction spreads one run out, and
    # 0 means no limit.
    assert parse_rate("10") == parse_rate(10) == Rate(10, 1)
    assert parse_rate("0.5/m") == Rate(1, 120)
    assert parse_rate("0") is None and parse_rate(0) is None
    with pytest.raises(ValueError):
        parse_rate("10 per minute")


def test_executions_per_window_never_exceed_the_limit_across_two_workers(
    two_workers, celery_app, rclient
) -> None:
    conversations = [f"conv_rl_{uuid.uuid4().hex[:8]}" for _ in range(12)]
    results = [
        celery_app.send_task(queues.GENERATE_AI_RESPONSE, queue=QUEUE,
                             kwargs={"conversation_id": c, "user_message": "hi"})
        for c in conversations
    ]  # fmt: skip
    for result in results:
        done = wait_for_state(celery_app, result.id, {"SUCCESS", "FAILURE"}, timeout=40)
        assert done.state == "SUCCESS", done.result
    store = ConversationStore(rclient, 3600, None)  # published without an owner
    # When each reply ran: the moment its turn was stored (right after it took its slot).
    ran = sorted(store.messages(c)[0]["ts"] for c in conversations)
    for first, later in zip(ran, ran[LIMIT:], strict=False):
        assert later - first >= WINDOW - 0.15, ran
    records = [rclient.hgetall(task_key(r.id)) for r in results]
    assert len({r["worker"] for r in records}) == 2  # both workers took part
    # Waiting for a slot is not a retry: none was used, while deliveries did wait (12 tasks
    # at 3 per window), some more often than max_retries (3) allows retries.
    assert all(int(r.get("retries") or 0) == 0 for r in records), records
    assert max(int(r.get("deferrals") or 0) for r in records) > 3, records


# --- fair shares between owners ---------------------------------------------------------

FAIR_DB = 15  # no other test's worker consumes here
FAIR_LIMIT, FAIR_WINDOW = 4, 2.0
FLOOD, FEW = 24, 4
AI = "/api/v1/tasks/ai/generate"


@pytest.fixture
async def two_owners(redis_url, log_dir, serve_gateway) -> AsyncIterator[SimpleNamespace]:
    """A gateway (in-process) with alice's and bob's keys, and a worker with a small AI
    limit, on a database of their own."""
    from tests.support.processes import start_worker

    url = database_url(redis_url, FAIR_DB)
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    env = {"OPENAI_API_KEY": "", "AI_RATE_LIMIT": f"{FAIR_LIMIT}/{FAIR_WINDOW:g}s"}
    worker = start_worker(url, log_dir, queues="ai_high_priority", concurrency=2,
                          name="fair", env=env)  # fmt: skip
    try:
        yield SimpleNamespace(gateway=await serve_gateway(redis_url=url, api_keys=API_KEYS))
    finally:
        worker.stop()


async def _submit(api: Api, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        body = {"conversation_id": f"conv-{uuid.uuid4().hex[:8]}", "user_message": "hi"}
        status, answer = await api.post(AI, json=body)
        assert status == 202, answer
        ids.append(answer["task_id"])
    return ids


async def _started_at(api: Api, task_id: str) -> float | None:
    """When a finished task started: right after it took its slot of the rate limit (its
    end adds the run's own time, which load stretches, to what the limit governs)."""
    status, body = await api.get(f"/api/v1/tasks/status/{task_id}")
    assert status == 200 and body["status"] != "FAILURE", body
    return epoch(body["started_at"]) if body["status"] == "SUCCESS" else None


def epoch(iso: str) -> float:
    """The API's ISO 8601 time as epoch seconds."""
    return datetime.fromisoformat(iso).timestamp()


async def test_an_owner_flooding_first_does_not_hold_back_another_owners_tasks(
    two_owners,
) -> None:
    async with aiohttp.ClientSession() as http:
        alice = Api(http, two_owners.gateway.base_url, ALICE)
        bob = Api(http, two_owners.gateway.base_url, BOB)
        flood = await _submit(alice, FLOOD)
        _, first = await alice.get(f"/api/v1/tasks/status/{flood[0]}")
        few = await _submit(bob, FEW)
        began = epoch(first["submitted_at"])
        _, bobs_first = await bob.get(f"/api/v1/tasks/status/{few[0]}")
        bob_came = epoch(bobs_first["submitted_at"])

        async def bob_done() -> list[float] | None:
            times = await asyncio.gather(*(_started_at(bob, t) for t in few))
            return None if None in times else times  # type: ignore[return-value]

        bob_times = await async_wait_until(bob_done, 40, 0.2, "bob's tasks done")
        alice_times = [
            t for t in await asyncio.gather(*(_started_at(alice, t) for t in flood)) if t
        ]
    alice_times.sort()
    # Alone at first, alice had the whole limit: her first LIMIT ran in one window.
    assert alice_times[FAIR_LIMIT - 1] - alice_times[0] < FAIR_WINDOW, alice_times
    # Then, while bob waited, each window was shared half and half: bob's FEW tasks ran in
    # the next FEW / (LIMIT / 2) windows, alice's share of those windows beside them, not
    # after her flood (FLOOD / LIMIT windows). Counted, not timed: load cannot blur it.
    # Measured from bob's arrival (under load his submissions may come a window late).
    windows = FEW // (FAIR_LIMIT // 2)
    before_bobs_last = [t for t in alice_times if bob_came <= t < max(bob_times)]
    assert len(before_bobs_last) <= FAIR_LIMIT + windows * (FAIR_LIMIT // 2), (
        [round(t - began, 2) for t in alice_times],
        [round(t - began, 2) for t in sorted(bob_times)],
    )
    # ... while the global ceiling held over both owners.
    ran = sorted(alice_times + bob_times)
    for first_run, later in zip(ran, ran[FAIR_LIMIT:], strict=False):
        assert later - first_run >= FAIR_WINDOW - 0.15, ran
