"""The gateway's publisher sends what Celery itself would send, with the record, in one call."""

from __future__ import annotations

import base64
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
import redis.asyncio

from service.publisher import TaskPublisher
from workers.core.headers import INDEXED_HEADER, OWNER_HEADER
from workers.core.keys import task_key
from workers.core.settings import Settings
from workers.runtime.celery_config import create_celery_app

# Differ between any two sends of the same task.
VOLATILE_PROPERTIES = {"delivery_tag"}


def queued(client: redis.Redis, queue: str) -> list[dict]:
    keys = sorted(client.scan_iter(f"{queue}*"))
    assert len(keys) == 1, keys
    return [json.loads(raw) for raw in client.lrange(keys[0], 0, -1)]


def comparable(message: dict) -> dict:
    body = json.loads(base64.b64decode(message["body"]))
    properties = {k: v for k, v in message["properties"].items() if k not in VOLATILE_PROPERTIES}
    return {**message, "body": body, "properties": properties}


@pytest.fixture
async def publisher(redis_url):  # type: ignore[no-untyped-def]
    celery = create_celery_app(Settings(redis_url=redis_url))
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    executor = ThreadPoolExecutor(1)
    pub = TaskPublisher(celery, client, ttl=600)
    await pub.start(executor)
    yield celery, pub
    pub.close()
    executor.shutdown()
    await client.aclose()
    celery.close()


async def test_message_is_the_one_celery_sends_with_the_record_and_the_sent_event(
    publisher, rclient
) -> None:
    celery, pub = publisher
    queue = f"tests-publish-{uuid.uuid4().hex}"
    task_id = str(uuid.uuid4())
    options = {
        "args": [1, "two"], "priority": 7, "countdown": 30, "queue": queue,
        "headers": {OWNER_HEADER: "alice"}, "time_limit": 20, "soft_time_limit": 10,
    }  # fmt: skip
    events = rclient.pubsub(ignore_subscribe_messages=True)
    events.psubscribe("/0.celeryev/task.sent")
    await pub.publish(
        "workers.tests.echo", {"x": [1, 2]}, task_id=task_id, record={"owner": "alice"},
        **options,
    )  # fmt: skip
    ours = queued(rclient, queue)
    rclient.delete(*rclient.scan_iter(f"{queue}*"))
    options["headers"] = {**options["headers"], INDEXED_HEADER: "1"}
    celery.send_task("workers.tests.echo", kwargs={"x": [1, 2]}, task_id=task_id, **options)
    theirs = queued(rclient, queue)
    rclient.delete(*rclient.scan_iter(f"{queue}*"))

    assert len(ours) == len(theirs) == 1
    mine, celerys = comparable(ours[0]), comparable(theirs[0])
    # Times computed at each send (ETA from the countdown) may differ by a moment.
    assert abs(
        _ts(mine["headers"].pop("eta")) - _ts(celerys["headers"].pop("eta"))
    ) < 5  # fmt: skip
    assert mine == celerys
    assert mine["properties"]["priority"] == 7
    assert mine["headers"]["timelimit"] == [20, 10]

    record = rclient.hgetall(task_key(task_id))
    assert record["state"] == "PENDING" and record["owner"] == "alice"

    kinds = [sent_event(m) for m in received(events, 2)]
    assert [(e["type"], e["uuid"], e["queue"]) for e in kinds] == [
        ("task-sent", task_id, queue),
        ("task-sent", task_id, queue),
    ]


def received(pubsub: redis.client.PubSub, count: int, timeout: float = 5) -> list[dict]:
    """The next `count` messages (subscribe confirmations read as None are skipped)."""
    deadline = time.monotonic() + timeout
    out: list[dict] = []
    while len(out) < count and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.5)
        if message is not None:
            out.append(message)
    pubsub.close()
    return out


def sent_event(message: dict) -> dict:
    return json.loads(base64.b64decode(json.loads(message["data"])["body"]))


def _ts(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


def _sends(celery, queue: str, n: int) -> list[dict]:  # type: ignore[no-untyped-def]
    """`n` submissions of one shape that differ in everything a submission may vary."""
    from datetime import UTC, datetime, timedelta

    return [
        {
            "name": "workers.tests.echo",
            "kwargs": {"x": [i, "é\n" * i], "n": None},
            "task_id": str(uuid.uuid4()),
            "args": [i] * (i % 2),
            "queue": queue,
            "priority": 3,
            "eta": datetime.now(UTC) + timedelta(hours=i),
            "headers": {OWNER_HEADER: f"owner-{i}", "tags": ["a"] * i},
            "time_limit": 20 + i,
            "soft_time_limit": 10 + i,
        }
        for i in range(n)
    ]


async def _publish_all(pub: TaskPublisher, sends: list[dict]) -> None:
    for send in sends:
        options = {k: v for k, v in send.items() if k not in ("name", "kwargs", "task_id")}
        await pub.publish(
            send["name"], send["kwargs"], task_id=send["task_id"], record={}, **options
        )  # fmt: skip


async def test_messages_of_one_shape_come_from_a_verified_template_equal_to_celerys(
    publisher, rclient
) -> None:
    celery, pub = publisher
    queue = f"tests-publish-{uuid.uuid4().hex}"
    sends = _sends(celery, queue, 5)
    events = rclient.pubsub(ignore_subscribe_messages=True)
    events.psubscribe("/0.celeryev/task.sent")
    await _publish_all(pub, sends)
    # The first message is Celery's, the second built both ways and compared: the shape is
    # served from its template from then on.
    assert pub._templates.verified == 1 and pub._templates.refused == 0
    ours = queued(rclient, queue)
    ours_events = [sent_event(m) for m in received(events, len(sends))]
    rclient.delete(*rclient.scan_iter(f"{queue}*"))

    events = rclient.pubsub(ignore_subscribe_messages=True)
    events.psubscribe("/0.celeryev/task.sent")
    for send in sends:
        options = {k: v for k, v in send.items() if k not in ("name", "kwargs", "task_id")}
        options["headers"] = {**options["headers"], INDEXED_HEADER: "1"}
        celery.send_task(send["name"], kwargs=send["kwargs"], task_id=send["task_id"], **options)
    theirs = queued(rclient, queue)
    theirs_events = [sent_event(m) for m in received(events, len(sends))]
    rclient.delete(*rclient.scan_iter(f"{queue}*"))

    assert [comparable(m) for m in ours] == [comparable(m) for m in theirs]
    for mine, celerys in zip(ours_events, theirs_events, strict=True):
        for moving in ("timestamp", "clock"):  # set anew for every event
            assert mine.pop(moving) and celerys.pop(moving)
        assert mine == celerys


async def test_a_shape_whose_template_differs_from_celery_stays_with_celery(
    publisher, rclient, monkeypatch
) -> None:
    """A Celery release that lays its messages out otherwise: caught by the comparison."""
    import service.message_templates

    celery, pub = publisher
    queue = f"tests-publish-{uuid.uuid4().hex}"
    monkeypatch.setattr(service.message_templates, "saferepr", lambda value, *a, **k: "changed")
    sends = _sends(celery, queue, 4)
    await _publish_all(pub, sends)
    assert pub._templates.verified == 0 and pub._templates.refused == 1
    ours = queued(rclient, queue)
    rclient.delete(*rclient.scan_iter(f"{queue}*"))
    assert len(ours) == len(sends)
    assert all(m["headers"]["kwargsrepr"] != "changed" for m in ours)  # Celery's, each


async def test_a_refused_template_is_logged_by_field_names_not_values(
    publisher, rclient, monkeypatch, caplog
) -> None:
    """The warning names where the messages differ, never the tenant's arguments."""
    import service.message_templates

    celery, pub = publisher
    queue = f"tests-publish-{uuid.uuid4().hex}"
    monkeypatch.setattr(service.message_templates, "flat_saferepr", lambda *a, **k: "changed")
    sends = [
        {**send, "kwargs": {"secret_prompt": "tell nobody 4f8e"}}
        for send in _sends(celery, queue, 2)
    ]
    await _publish_all(pub, sends)
    rclient.delete(*rclient.scan_iter(f"{queue}*"))
    warnings = [r.getMessage() for r in caplog.records if "built by Celery" in r.getMessage()]
    assert len(warnings) == 1 and "argsrepr" in warnings[0] and "kwargsrepr" in warnings[0]
    assert "4f8e" not in warnings[0] and "changed" not in warnings[0]
