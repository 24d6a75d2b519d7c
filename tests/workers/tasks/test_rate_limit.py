"""The platform-wide rate limit holds across workers; deferred tasks are not failed."""

from __future__ import annotations

import uuid

import pytest

from tests.support.waiting import wait_for_state
from workers import queues
from workers.conversations import ConversationStore
from workers.rate_limit import Rate, parse_rate
from workers.task_index import task_key

QUEUE = "tests_rate_limit"
LIMIT, WINDOW = 2, 1.0


@pytest.fixture(scope="module")
def two_workers(redis_url, log_dir):
    from tests.support.processes import start_worker

    env = {"OPENAI_API_KEY": "", "AI_RATE_LIMIT": f"{LIMIT}/{WINDOW:g}s"}
    workers = [
        start_worker(redis_url, log_dir, queues=QUEUE, concurrency=2, name=f"rl{i}", env=env)
        for i in range(2)
    ]
    yield workers
    for w in workers:
        w.stop()


def test_rates_parse() -> None:
    assert parse_rate("10/m") == Rate(10, 60) and parse_rate("3/2s") == Rate(3, 2)
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
    # Deferrals do not use up max_retries (3): tasks deferred more often still succeeded.
    assert max(int(r["retries"]) for r in records) > 3
