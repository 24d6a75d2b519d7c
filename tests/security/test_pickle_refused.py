"""A pickle message put straight on a queue is refused by a real worker, never executed.

The message is a well-formed Celery protocol-2 task message for `tests.record` (which
would push a marker into Redis), serialized with pickle. Its arguments also carry a
gadget that creates a file when unpickled, so the test proves the body is never even
deserialized, not only that the task never runs. Celery then acknowledges (drops) the
message: it must not sit in the queue or in kombu's unacked set, and the worker goes on
with the next (JSON) task.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis

from tests.security.conftest import database_url
from tests.support.processes import start_worker
from tests.support.waiting import wait_until
from workers.core.settings import load_settings
from workers.runtime.celery_config import create_celery_app
from workers.runtime.queue_depth import priority_keys

pytestmark = pytest.mark.slow

DB = 16  # no other test's worker consumes here
REFUSAL = "Refusing to deserialize untrusted content of type pickle"


class Gadget:
    """Unpickling this creates `path`: proof of deserialization if the file appears."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (open, (self.path, "w"))


def test_pickle_message_is_refused_and_dropped(redis_url: str, log_dir: Path, tmp_path) -> None:
    url = database_url(redis_url, DB)
    client = redis.Redis.from_url(url, decode_responses=True)
    client.flushdb()
    app = create_celery_app(load_settings(redis_url=url))
    worker = start_worker(url, log_dir, queues="default", concurrency=1, name="pickle")
    try:
        task_id = str(uuid.uuid4())
        marker = f"tests:pickle:{task_id}"
        gadget_file = tmp_path / "unpickled"
        headers = {
            "lang": "py", "task": "tests.record", "id": task_id, "root_id": task_id,
            "parent_id": None, "group": None, "retries": 0, "eta": None, "expires": None,
            "timelimit": [None, None], "argsrepr": "()", "kwargsrepr": "{}", "origin": "test",
            "ignore_result": False, "shadow": None,
        }  # fmt: skip
        body = (
            (),
            {"list_key": marker, "label": Gadget(str(gadget_file))},
            {"callbacks": None, "errbacks": None, "chain": None, "chord": None},
        )
        queue = app.amqp.queues["default"]
        with app.connection_for_write() as conn:
            conn.Producer().publish(
                body, exchange=queue.exchange, routing_key=queue.routing_key,
                declare=[queue], serializer="pickle", headers=headers, priority=5,
                correlation_id=task_id,
            )  # fmt: skip

        # A JSON task behind it runs: the worker consumed the queue and is still healthy.
        after = f"tests:pickle:after:{task_id}"
        app.send_task("tests.record", kwargs={"list_key": after, "label": "ok"}, queue="default")
        wait_until(lambda: client.lrange(after, 0, -1) == ["ok"], 30, what="JSON task after it")
        wait_until(lambda: REFUSAL in worker.log(), 10, what="the refusal in the worker log")

        assert not client.exists(marker), "the pickled task ran"
        assert not gadget_file.exists(), "the pickled body was deserialized"
        # Dropped, not parked: no queue list, no unacked entry keeps it.
        assert sum(client.llen(k) for k in priority_keys("default")) == 0
        wait_until(lambda: client.hlen("unacked") == 0, 10, what="nothing left unacked")
        assert "The message has been ignored and discarded" in worker.log()
        assert worker.alive()
        # Celery stored no result for it: it was never a task.
        assert app.AsyncResult(task_id).state == "PENDING"
    finally:
        worker.stop()
        app.close()
        client.flushdb()
        client.close()
