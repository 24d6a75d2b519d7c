"""Fixtures for the built-in task tests: local stand-ins for OpenAI, SMTP and webhooks.

Each test module runs its own workers on private queues (`tests_<module>_...`), so a
worker started elsewhere in the session with other settings never takes their tasks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery.result import AsyncResult

from tests.support.fake_openai import FakeOpenAI
from tests.support.waiting import wait_for_state


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI.running() as server:
        yield server


def run_task(app: Any, name: str, queue: str, timeout: float = 30.0, **kwargs: Any) -> AsyncResult:
    """Send a task by name to `queue` and wait until it finishes (either way)."""
    options = {k: kwargs.pop(k) for k in ("soft_time_limit", "time_limit") if k in kwargs}
    result = app.send_task(name, kwargs=kwargs, queue=queue, **options)
    return wait_for_state(app, result.id, {"SUCCESS", "FAILURE"}, timeout=timeout)
