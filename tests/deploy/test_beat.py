"""Two Beat processes at once: one holds the RedBeat lock and sends; each slot runs once."""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from celery.schedules import schedule
from redbeat import RedBeatSchedulerEntry

from tests.deploy.conftest import Processes, deploy_env
from tests.support.waiting import wait_until
from workers.core import queues
from workers.core.settings import load_settings
from workers.runtime.celery_config import create_celery_app

pytestmark = pytest.mark.slow

BEAT = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "beat"]
INTERVAL = 1.0


def sent_messages(client: redis.Redis) -> list[dict]:
    """Every message waiting on the default queue (no worker consumes in this test)."""
    messages = []
    for key in client.scan_iter(f"{queues.DEFAULT}*"):
        if client.type(key) == b"list":
            messages += [json.loads(raw) for raw in client.lrange(key, 0, -1)]
    return [m for m in messages if m["headers"]["task"] == queues.CHECK_TASK_HEALTH]


def origin_pid(message: dict) -> int:
    return int(message["headers"]["origin"].split("@")[0].removeprefix("gen"))


def test_two_beats_one_sender_each_slot_once_and_takeover_on_stop(
    private_redis: Callable, processes: Processes, log_dir: Path
) -> None:
    server = private_redis()
    app = create_celery_app(load_settings(redis_url=server.url))
    client = redis.Redis.from_url(server.url)
    try:
        RedBeatSchedulerEntry(
            "tests-every-second", queues.CHECK_TASK_HEALTH,
            schedule(run_every=timedelta(seconds=INTERVAL)), app=app,
        ).save()  # fmt: skip
        env = deploy_env(server.url)
        beats = [processes(BEAT, env, log_dir / f"beat-{n}.log") for n in (1, 2)]
        by_pid = {beat.pid: beat for beat in beats}

        wait_until(lambda: len(sent_messages(client)) >= 1, 30, 0.05, "first scheduled send")
        first_at = time.monotonic()
        wait_until(lambda: len(sent_messages(client)) >= 5, 20, 0.05, "five scheduled sends")
        elapsed = time.monotonic() - first_at
        before = sent_messages(client)
        senders = {origin_pid(m) for m in before}
        assert len(senders) == 1, "both Beats sent"
        assert len(before) <= elapsed / INTERVAL + 2, f"{len(before)} sends in {elapsed:.1f}s"

        # The lock holder stops (a deploy, a restart): the other one takes over.
        holder = by_pid[senders.pop()]
        holder.signal(signal.SIGTERM)
        holder.process.wait(15)
        other = next(b for b in beats if b is not holder)
        wait_until(
            lambda: any(origin_pid(m) == other.pid for m in sent_messages(client)),
            20, 0.1, "the second Beat taking over",
        )  # fmt: skip
        assert "Acquired lock" in other.log()
        total = time.monotonic() - first_at
        assert len(sent_messages(client)) <= total / INTERVAL + 2
    finally:
        client.close()
        app.close()
