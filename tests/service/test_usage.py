"""AI usage and budgets against the real gateway, a real worker and a local OpenAI
stand-in: per-task usage in the status document, totals per owner and model that add up
to what the model reported, who sees whose usage, bounded ranges, and budgets that refuse
the next submission with 429 while a running reply finishes."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from claw_client import AsyncClawClient

from tests.support.fake_openai import FakeOpenAI
from tests.support.processes import database_url
from tests.support.waiting import async_wait_until

API = "/api/v1/tasks"
ADMIN = "usage-admin-0123456789"
CAROL, DAVE = "usage-carol-0123456789", "usage-dave-0123456789"
ERIN, FRANK = "usage-erin-0123456789", "usage-frank-0123456789"
# Owners of their own, so the counters are this module's alone.
API_KEYS = ",".join(
    f"{token}:{owner}:{role}"
    for token, owner, role in (
        (ADMIN, "ops", "admin"), (CAROL, "carol", "user"), (DAVE, "dave", "user"),
        (ERIN, "erin", "user"), (FRANK, "frank", "user"),
    )
)  # fmt: skip
# `local-llama` has no price in MODEL_PRICES: its cost is 0, and the usage says so.
MODELS = "gpt-4o-mini,gpt-4o,local-llama"
MINI, FOUR_O, LLAMA = "gpt-4o-mini-2024-07-18", "gpt-4o-2024-07-18", "local-llama-2024-07-18"
SUMS = ("tasks", "prompt_tokens", "completion_tokens", "cost")
PRICES = {MINI: (0.15, 0.60), FOUR_O: (2.50, 10.00)}  # the defaults, USD per 1M tokens


@pytest.fixture(scope="module")
def usage_redis_url(redis_url: str) -> str:
    """A database of its own: no other test's worker takes these tasks or counts usage."""
    return database_url(redis_url, 1)


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI.running(slow_words=30, slow_delay=0.1) as server:
        yield server


@pytest.fixture(scope="module")
def usage_gateway(usage_redis_url, log_dir, fake_openai) -> Iterator[Any]:
    from tests.support.processes import start_gateway, start_worker

    env = fake_openai.env(AI_RATE_LIMIT="1000/s", OPENAI_ALLOWED_MODELS=MODELS)
    worker = start_worker(
        usage_redis_url, log_dir, name="usage", queues="ai_high_priority", env=env
    )
    gateway = start_gateway(usage_redis_url, log_dir, env={**env, "API_KEYS": API_KEYS})
    yield gateway
    gateway.stop()
    worker.stop()


class Caller:
    """One key's calls through the client package, answered as they came: (status,
    headers, JSON body); a 429's `Retry-After` is read from the headers."""

    def __init__(self, claw: AsyncClawClient) -> None:
        self.claw = claw

    async def call(
        self, method: str, path: str, json: Any = None, params: dict | None = None
    ) -> tuple[int, Any, Any]:
        resp = await self.claw.request(method, path, json=json, params=params)
        return resp.status_code, resp.headers, resp.json()

    async def ask(self, question: str, **options: Any) -> tuple[int, Any, Any]:
        body = {"conversation_id": f"c-{uuid.uuid4().hex}", "user_message": question, **options}
        return await self.call("POST", f"{API}/ai/generate", body)

    async def status(self, task_id: str) -> dict[str, Any]:
        _, _, body = await self.call("GET", f"{API}/status/{task_id}")
        return body

    async def finished(self, task_id: str) -> dict[str, Any]:
        async def done() -> dict[str, Any] | None:
            body = await self.status(task_id)
            return body if body["status"] in ("SUCCESS", "FAILURE") else None

        body = await async_wait_until(done, timeout=30, what=f"task {task_id} to finish")
        assert body["status"] == "SUCCESS", body
        return body

    async def run(self, question: str, **options: Any) -> dict[str, Any]:
        status, _, body = await self.ask(question, **options)
        assert status == 202, body
        return await self.finished(body["task_id"])

    async def usage(self, **params: str) -> tuple[int, Any]:
        status, _, body = await self.call("GET", "/api/v1/usage", params=params)
        return status, body


@pytest.fixture
async def as_(usage_gateway) -> AsyncIterator[Any]:
    """`as_(token)`: a Caller with that key (its client closed after the test)."""
    clients: list[AsyncClawClient] = []

    def caller(token: str) -> Caller:
        clients.append(AsyncClawClient(usage_gateway.base_url, token))
        return Caller(clients[-1])

    yield caller
    for claw in clients:
        await claw.close()


def reported(fake: FakeOpenAI, marker: str) -> tuple[int, int]:
    """The tokens the fake model reported for the request carrying `marker` (its rule:
    prompt characters // 4, one token per word of the reply)."""
    [request] = fake.chat_requests(marker)
    prompt = sum(len(m["content"]) for m in request["messages"]) // 4
    question = request["messages"][-1]["content"]
    reply = f"Echo: {question} | messages={len(request['messages'])}"
    return prompt, len(reply.split(" "))


def by_group(rows: list[dict[str, Any]]) -> dict[tuple[str, ...], dict[str, Any]]:
    return {(r.get("owner", ""), r.get("model", "")): r for r in rows}


async def test_usage_per_owner_and_model_adds_up_to_what_the_model_reported(
    as_, fake_openai
) -> None:
    carol, dave, admin = as_(CAROL), as_(DAVE), as_(ADMIN)
    tag = uuid.uuid4().hex
    runs = {
        ("carol", MINI): [f"carol mini one {tag}", f"carol mini two {tag}"],
        ("carol", FOUR_O): [f"carol four-o {tag}"],
        ("dave", LLAMA): [f"dave llama {tag}"],
    }
    options = {MINI: {}, FOUR_O: {"model": "gpt-4o"}, LLAMA: {"model": "local-llama"}}
    expected: dict[tuple[str, str], dict[str, Any]] = {}
    for (owner, model), questions in runs.items():
        caller = carol if owner == "carol" else dave
        for question in questions:
            task = await caller.run(question, **options[model])
            prompt, completion = reported(fake_openai, question)
            # The task's own record: what it used, and how soon its first text came.
            assert (task["model"], task["prompt_tokens"], task["completion_tokens"]) == (
                model, prompt, completion,
            )  # fmt: skip
            assert task["ttft_ms"] is not None and task["ttft_ms"] >= 0
            assert task["cost_priced"] is (model in PRICES)
            price = PRICES.get(model, (0.0, 0.0))
            cost = (prompt * price[0] + completion * price[1]) / 1_000_000
            assert task["cost"] == pytest.approx(cost)
            sums = expected.setdefault((owner, model), dict.fromkeys(SUMS, 0))
            sums["tasks"] += 1
            sums["prompt_tokens"] += prompt
            sums["completion_tokens"] += completion
            sums["cost"] += cost

    def check(rows: list[dict[str, Any]], owners: set[str]) -> None:
        got = by_group(rows)
        assert set(got) == {key for key in expected if key[0] in owners}
        for key, row in got.items():
            want = expected[key]
            assert row["tasks"] == want["tasks"]
            assert row["prompt_tokens"] == want["prompt_tokens"]
            assert row["completion_tokens"] == want["completion_tokens"]
            assert row["total_tokens"] == want["prompt_tokens"] + want["completion_tokens"]
            assert row["cost"] == pytest.approx(want["cost"])
            assert row["unpriced_tasks"] == (want["tasks"] if key[1] == LLAMA else 0)
            assert row["ttft_ms_avg"] is not None

    # An admin sees everyone's, by hour and by day; the buckets add up to the totals.
    for granularity in ("hour", "day"):
        status, body = await admin.usage(granularity=granularity)
        assert status == 200, body
        assert body["owner"] is None and body["group_by"] == ["owner", "model"]
        check(body["totals"], {"carol", "dave"})
        in_buckets = sum(row["tasks"] for b in body["buckets"] for row in b["totals"])
        assert in_buckets == sum(w["tasks"] for w in expected.values())
    status, body = await admin.usage(owner="dave")
    assert status == 200 and body["owner"] == "dave"
    check(body["totals"], {"dave"})
    # A user key sees its own only, and may not name another owner.
    status, body = await carol.usage()
    assert status == 200 and body["owner"] == "carol"
    check(body["totals"], {"carol"})
    status, body = await carol.usage(owner="dave")
    assert status == 403 and "owner" in body["details"]
    status, body = await dave.usage(group_by="model")
    assert status == 200 and [r["model"] for r in body["totals"]] == [LLAMA]
    assert "owner" not in body["totals"][0]
    # No grouping: one total per bucket.
    status, body = await admin.usage(group_by="")
    assert status == 200 and len(body["totals"]) == 1
    assert body["totals"][0]["tasks"] == sum(w["tasks"] for w in expected.values())


async def test_a_usage_query_out_of_bounds_answers_400_naming_the_field(as_) -> None:
    admin = as_(ADMIN)
    now = datetime.now(UTC)
    cases = [
        ("from", {"from": now.isoformat(), "to": (now - timedelta(hours=1)).isoformat()}),
        ("from", {"from": (now - timedelta(days=40)).isoformat(), "to": now.isoformat()}),
        ("from", {"from": "yesterday"}),
        ("granularity", {"granularity": "week"}),
        ("group_by", {"group_by": "owner,queue"}),
        ("to", {"to": "2026-13-01T00:00:00"}),
    ]
    for field, params in cases:
        status, body = await admin.usage(**params)
        assert status == 400 and list(body["details"]) == [field], (params, body)
    # A day range may be as wide as a year; an hour range at most 31 days.
    start = (now - timedelta(days=200)).isoformat()
    status, body = await admin.usage(granularity="day", **{"from": start})
    assert status == 200, body
    status, body = await admin.usage(granularity="hour", **{"from": start})
    assert status == 400 and "31 days" in body["details"]["from"][0]


async def test_a_budget_refuses_the_next_submission_while_a_running_reply_finishes(
    as_,
) -> None:
    erin, frank, admin = as_(ERIN), as_(FRANK), as_(ADMIN)
    status, _, body = await admin.call("GET", "/api/v1/budgets/erin")
    assert status == 200 and body["exceeded"] == []
    assert body["tokens_per_minute"] == {"limit": 0, "used": 0, "resets_at": None,
                                         "source": "default"}  # fmt: skip
    # A reply streaming when its owner's budget is set below what it uses...
    status, _, body = await erin.ask(f"[slow] erin {uuid.uuid4().hex}")
    assert status == 202
    slow = body["task_id"]
    await async_wait_until(lambda: _started(erin, slow), timeout=20, what="the reply to start")
    # (A task cancelled before it ran, to retry once over the budget.)
    status, _, body = await erin.call("POST", "/api/v1/tasks/ai/generate",
                                      {"conversation_id": "later", "user_message": "later",
                                       "countdown": 3600})  # fmt: skip
    assert status == 202, body
    cancelled = body["task_id"]
    assert (await erin.call("POST", f"/api/v1/tasks/cancel/{cancelled}"))[0] == 200
    status, _, body = await admin.call("PUT", "/api/v1/budgets/erin", {"tokens_per_minute": 5})
    assert status == 200 and body["tokens_per_minute"]["source"] == "owner", body
    assert (await erin.status(slow))["status"] == "STARTED"
    # ...finishes.
    task = await erin.finished(slow)
    used = task["prompt_tokens"] + task["completion_tokens"]
    assert used > 5
    # The next submission is refused, with when to come back and the budget's state.
    status, headers, body = await erin.ask("one more")
    assert status == 429, body
    assert 1 <= int(headers["Retry-After"]) <= 60
    budget = body["details"]["budget"]
    assert budget["owner"] == "erin" and budget["exceeded"] == ["tokens_per_minute"]
    assert budget["tokens_per_minute"]["limit"] == 5
    assert budget["tokens_per_minute"]["used"] == used
    assert budget["tokens_per_minute"]["resets_at"] > task["finished_at"]
    # A retry is a submission too.
    status, _, body = await erin.call("POST", f"/api/v1/tasks/retry/{cancelled}")
    assert status == 429 and body["details"]["budget"]["exceeded"] == ["tokens_per_minute"]
    # Another owner is not affected; a user key cannot read or set budgets.
    task = await frank.run(f"frank {uuid.uuid4().hex}")
    status, _, _ = await erin.call("GET", "/api/v1/budgets/erin")
    assert status == 403
    status, _, _ = await erin.call("DELETE", "/api/v1/budgets/erin")
    assert status == 403
    # A cost budget per day: frank's one task costs more than this one.
    status, _, body = await admin.call("PUT", "/api/v1/budgets/frank", {"cost_per_day": 1e-9})
    assert status == 200 and body["exceeded"] == ["cost_per_day"]
    assert body["cost_per_day"]["used"] == pytest.approx(task["cost"])
    status, headers, body = await frank.ask("and again")
    assert status == 429 and body["details"]["budget"]["exceeded"] == ["cost_per_day"]
    midnight = datetime.fromisoformat(body["details"]["budget"]["cost_per_day"]["resets_at"])
    assert int(headers["Retry-After"]) == pytest.approx(
        (midnight - datetime.now(UTC)).total_seconds(), abs=5
    )
    # Removed, the defaults (unlimited) apply again.
    status, _, body = await admin.call("DELETE", "/api/v1/budgets/erin")
    assert status == 200 and body["tokens_per_minute"]["limit"] == 0 and body["exceeded"] == []
    status, _, _ = await erin.ask("back again")
    assert status == 202
    # A budget's input is checked, field by field.
    status, _, body = await admin.call("PUT", "/api/v1/budgets/frank", {"cost_per_day": -1})
    assert status == 400 and list(body["details"]) == ["cost_per_day"]


async def _started(caller: Caller, task_id: str) -> bool:
    return (await caller.status(task_id))["status"] == "STARTED"


def test_the_window_frees_when_enough_of_its_oldest_tasks_have_left_it() -> None:
    from workers.ai.budgets import _window_frees, retry_after
    from workers.taskindex.status import iso

    entries = [(100.0, 40), (110.0, 30), (120.0, 50)]  # 120 tokens in the window
    assert _window_frees(entries, 100) == 100.0  # without the first: 80 < 100
    assert _window_frees(entries, 60) == 110.0  # without the first two: 50 < 60
    assert _window_frees(entries, 130) == 100.0  # under it: the oldest leaves first
    state = {"exceeded": ["tokens_per_minute"],
             "tokens_per_minute": {"resets_at": iso(110.0 + 60)}}  # fmt: skip
    assert retry_after(state, now=125.2) == 45


def test_counters_are_read_back_per_owner_and_model_whatever_the_owner_is_named(
    usage_redis_url,
) -> None:
    """Written by `record_usage` and read back: an owner's name holding the separator, an
    owner named like the no-owner namespace, a model holding the separator and tasks
    without an owner each stay their own."""
    import redis

    from workers.ai.usage import TaskUsage, bucket_stamp, record_usage, row, totals
    from workers.core.keys import usage_bucket_key
    from workers.core.settings import load_settings

    client = redis.Redis.from_url(usage_redis_url, decode_responses=True)
    now = datetime(2001, 2, 3, 4, 5, tzinfo=UTC).timestamp()  # a bucket no other test has
    runs = [("a|b", "gpt", 10), ("a", "b|gpt", 20), ("@system", "gpt", 30), (None, "gpt", 40)]
    moment = datetime.fromtimestamp(now, UTC)
    buckets = [usage_bucket_key(g, bucket_stamp(g, moment)) for g in ("hour", "day")]
    try:
        for owner, model, prompt in runs:
            used = TaskUsage(model=model, prompt_tokens=prompt, completion_tokens=1, cost=0.5,
                             priced=True, ttft_ms=None)  # fmt: skip
            record_usage(client, load_settings(), None, owner, used, now=now)
        raw = client.hgetall(buckets[0])
    finally:
        client.delete(*buckets)
        client.close()
    by_owner = {row(("owner", "model"), key, sums)["owner"]: (key[1], sums["prompt_tokens"])
                for key, sums in totals(raw, None, ("owner", "model")).items()}  # fmt: skip
    assert by_owner == {"a|b": ("gpt", 10), "a": ("b|gpt", 20), "@system": ("gpt", 30),
                        None: ("gpt", 40)}  # fmt: skip
    for owner, model, prompt in runs[:3]:
        assert {k[0]: s["prompt_tokens"] for k, s in totals(raw, owner, ("model",)).items()} == {
            model: prompt
        }, owner


@contextlib.contextmanager
def spent_today(client: Any, owner: str, cost: float) -> Iterator[None]:
    """`owner` has spent `cost` USD today: a finished AI task's usage, recorded as a worker
    records it (`record_usage`; without a task record). Forgotten after: its spending, and
    any budget of its own a test set."""
    from workers.ai.usage import TaskUsage, record_usage
    from workers.core.keys import budget_key, usage_cost_key, usage_recent_key
    from workers.core.settings import load_settings

    used = TaskUsage(model=MINI, prompt_tokens=10, completion_tokens=10, cost=cost,
                     priced=True, ttft_ms=None)  # fmt: skip
    record_usage(client, load_settings(), None, owner, used)
    try:
        yield
    finally:
        today = datetime.now(UTC).strftime("%Y%m%d")
        yesterday = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y%m%d")
        client.delete(
            budget_key(owner), usage_recent_key(owner),
            usage_cost_key(owner, today), usage_cost_key(owner, yesterday),
        )  # fmt: skip
