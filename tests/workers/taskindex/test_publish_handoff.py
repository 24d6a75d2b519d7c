"""A Python publisher's record reaches the code that writes it in the message's headers
(`RECORD_HEADER`), never in a module's memory: our transport writes it with the message
and stores the message without it; another transport's messages get theirs written by
the `after_task_publish` receiver; a publish that fails leaves no record."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from kombu.exceptions import OperationalError

import workers.runtime.signals  # noqa: F401 - the publish receivers under test
from workers.core.headers import RECORD_HEADER
from workers.core.keys import task_key
from workers.core.settings import Settings
from workers.runtime.celery_config import create_celery_app


@pytest.fixture
def queue(rclient) -> Iterator[str]:
    name = f"tests-handoff-{uuid.uuid4().hex}"
    yield name
    rclient.delete(*rclient.scan_iter(f"{name}*"), "tests-handoff-none")


def queued(rclient, queue: str) -> list[dict[str, Any]]:
    return [json.loads(raw) for key in rclient.scan_iter(f"{queue}*") for raw in
            rclient.lrange(key, 0, -1)]  # fmt: skip


def test_our_transport_stores_the_message_without_the_record_it_wrote(
    celery_app, rclient, queue
) -> None:
    result = celery_app.send_task("tests.record", args=["x"], queue=queue, priority=3)
    try:
        [message] = queued(rclient, queue)
        assert message["headers"]["id"] == result.id
        assert RECORD_HEADER not in message["headers"]
        record = rclient.hgetall(task_key(result.id))
        assert (record["state"], record["queue"], record["priority"]) == ("PENDING", queue, "3")
    finally:
        rclient.delete(task_key(result.id))


def test_with_another_transport_the_after_publish_receiver_writes_the_record(
    redis_url, rclient, queue
) -> None:
    plain = Celery("plain-transport", broker=redis_url, set_as_current=False)
    try:
        result = plain.send_task("tests.record", args=["x"], queue=queue)
    finally:
        plain.close()
    try:
        record = rclient.hgetall(task_key(result.id))
        assert (record["state"], record["name"], record["queue"]) == (
            "PENDING",
            "tests.record",
            queue,
        )
        assert len(queued(rclient, queue)) == 1
    finally:
        rclient.delete(task_key(result.id))


def test_a_publish_that_fails_leaves_no_record(rclient) -> None:
    # Our transport on a Redis that is not there; the record would go to the live one.
    app = create_celery_app(Settings(redis_url="redis://127.0.0.1:1/0"))
    task_id = str(uuid.uuid4())
    try:
        with pytest.raises((OperationalError, ConnectionError, OSError)):
            app.send_task(
                "tests.record", task_id=task_id, queue="tests-handoff-none", retry=False,
                ignore_result=True,
            )  # fmt: skip
    finally:
        app.close()
    assert not rclient.exists(task_key(task_id))
