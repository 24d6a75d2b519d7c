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
        return result.id
