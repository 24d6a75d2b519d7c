"""`BaseTaskWithRetry`: the retry policy of every built-in task, declared once."""

from __future__ import annotations

import logging
import random
import socket
from typing import Any

import redis.exceptions
from celery import Task
from celery.worker import state as worker_state
from celery.worker.request import Request

from workers.settings import get_settings

logger = logging.getLogger(__name__)


class TransientError(Exception):
    """A fault worth retrying: the same call may well succeed a little later.

    `retry_after` (seconds), when the remote side said how long to wait, overrides the
    exponential backoff for that attempt.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(Exception):
    """A fault that retrying cannot fix (bad input, refused credentials)."""


TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    TransientError,
    ConnectionError,
    TimeoutError,
    socket.timeout,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


def backoff_seconds(retries: int, *, base: float, maximum: float, jitter: float) -> float:
    """Exponential backoff: base, 2*base, 4*base, ... capped, spread by +/- jitter."""
    delay = min(base * (2**retries), maximum)
    return max(0.0, delay * (1 + random.uniform(-jitter, jitter)))  # noqa: S311 - not crypto


class TimeLimitedRequest(Request):
    """Keeps the soft time limit below the hard one.

    Celery arms the hard limit only after the soft one fires, so a per-call
    `time_limit=10` under the default `soft_time_limit=300` would let the task run for
    300 s. When the soft limit is not below the hard one, it is set to 90% of it.
    """

    SOFT_SHARE = 0.9

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        hard, soft = self.time_limits
        hard = hard or self.task.time_limit
        soft = soft or self.task.soft_time_limit
        if hard and soft and soft >= hard:
            self.time_limits = (hard, hard * self.SOFT_SHARE)
        self._claimed = False

    def revoked(self) -> bool:
        """Also honour cancels recorded in the task index.

        Celery keeps revokes in each worker's memory: a worker started after the cancel,
        or restarted since, would run the task. The index is asked once, right before
        execution, atomically with marking the task as claimed.
        """
        if not self._claimed and not self._already_revoked:
            self._claimed = True
            try:
                from workers.signals import task_index

                if not task_index().claim(self.id):
                    worker_state.revoked.add(self.id)
            except redis.exceptions.RedisError as exc:
                logger.warning("could not check cancel of %s: %s", self.id, exc)
        return super().revoked()


class BaseTaskWithRetry(Task):
    """Retries transient faults with exponential backoff; anything else fails at once.

    After `max_retries` retries the task ends FAILURE with the last error.
    """

    abstract = True
    Request = TimeLimitedRequest
    max_retries = 3
    transient_errors = TRANSIENT_ERRORS

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except self.transient_errors as exc:
            if self.request.called_directly:
                raise
            raise self.retry(exc=exc, countdown=self.retry_countdown(exc)) from exc

    def retry_countdown(self, exc: BaseException) -> float:
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return float(retry_after)
        settings = get_settings()
        return backoff_seconds(
            self.request.retries,
            base=settings.retry_backoff_base,
            maximum=settings.retry_backoff_max,
            jitter=settings.retry_jitter,
        )
