"""Wait for a condition with a deadline: the harness never sleeps a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from celery import Celery
from celery.result import AsyncResult

T = TypeVar("T")


class Timeout(AssertionError):
    pass


def wait_until(
    check: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> T:
    """Call `check` until it returns something truthy; that value is returned."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Timeout(f"timed out after {timeout}s waiting for {what or check}")
        time.sleep(interval)


async def async_wait_until(
    check: Callable[[], Awaitable[T]], timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Timeout(f"timed out after {timeout}s waiting for {what or check}")
        await asyncio.sleep(interval)


def wait_for_state(
    app: Celery, task_id: str, states: set[str] | str, timeout: float = 20.0
) -> AsyncResult:
    """Poll the result backend until the task reaches one of `states`."""
    wanted = {states} if isinstance(states, str) else set(states)
    result = AsyncResult(task_id, app=app)

    def reached() -> Any:
        return result if result.state in wanted else None

    return wait_until(reached, timeout, 0.05, f"task {task_id} in {sorted(wanted)}")
