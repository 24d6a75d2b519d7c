"""Publishing tasks by name without blocking the event loop."""

from __future__ import annotations

import asyncio
import functools
import logging
from datetime import UTC, datetime
from typing import Any

import redis.exceptions
from celery import Celery
from kombu.exceptions import OperationalError

from service.errors import BadRequest, ServiceUnavailable
from workers.queues import TASK_QUEUES

logger = logging.getLogger(__name__)


class TaskPublisher:
    """Sends tasks through Celery's (blocking) producer in a bounded thread pool."""

    def __init__(self, celery: Celery, executor: Any, max_in_flight: int = 32) -> None:
        self._celery = celery
        self._executor = executor
        self._slots = asyncio.Semaphore(max_in_flight)

    async def publish(
        self,
        name: str,
        kwargs: dict[str, Any],
        *,
        args: list[Any] | None = None,
        priority: int | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        queue: str | None = None,
        task_id: str | None = None,
        headers: dict[str, Any] | None = None,
        time_limit: float | None = None,
        soft_time_limit: float | None = None,
    ) -> str:
        if eta is not None and eta <= datetime.now(UTC):
            raise BadRequest("eta is in the past", details={"eta": ["must be in the future"]})
        send = functools.partial(
            self._celery.send_task,
            name,
            args=args,
            kwargs=kwargs,
            queue=queue or TASK_QUEUES.get(name),
            task_id=task_id,
            priority=priority,
            countdown=countdown,
            eta=eta,
            headers=headers,
            time_limit=time_limit,
            soft_time_limit=soft_time_limit,
        )
        async with self._slots:
            try:
                result = await asyncio.get_running_loop().run_in_executor(self._executor, send)
            except (OperationalError, redis.exceptions.ConnectionError, OSError) as exc:
                logger.warning("publish of %s failed: %s", name, exc)
                raise ServiceUnavailable("broker unavailable, task not accepted") from exc
            except AttributeError as exc:
                # kombu can hand out a pooled producer whose channel an earlier error
                # (an OOM refusal) closed: its publish fails this way once, then the
                # pool recovers. The task was not published.
                if "'NoneType' object has no attribute 'client'" not in str(exc):
                    raise
                logger.warning("publish of %s failed on a closed channel", name)
                raise ServiceUnavailable("broker connection reset, task not accepted") from exc
            except redis.exceptions.ResponseError as exc:
                if not is_out_of_memory(exc):
                    raise
                logger.warning("publish of %s refused: Redis is out of memory", name)
                raise ServiceUnavailable("broker out of memory, task not accepted") from exc
        return result.id


def is_out_of_memory(exc: BaseException) -> bool:
    """Redis with `noeviction` refuses writes past `maxmemory` with an OOM error (also as
    the cause of a failed script or pipeline command)."""
    return isinstance(exc, redis.exceptions.ResponseError) and "used memory > 'maxmemory'" in str(
        exc
    )
