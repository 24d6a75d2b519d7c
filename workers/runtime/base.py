"""The task classes: `PlatformTask`, the delivery contract of every task on the app, and
`BaseTaskWithRetry`, the retry policy of the built-in tasks on top of it."""

from __future__ import annotations

import logging
import random
import socket
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.exceptions
from billiard.exceptions import WorkerLostError
from celery import Task
from celery.exceptions import Ignore, Reject
from celery.signals import worker_ready
from celery.utils.time import get_exponential_backoff_interval

# task_ready is private (workers/runtime/internals.py lists it); celery-types omits it.
from celery.worker.request import Request, task_ready  # type: ignore[attr-defined]
from kombu.exceptions import OperationalError

from workers.core.headers import DEFERRED_HEADER, OWNER_HEADER
from workers.core.settings import get_settings
from workers.runtime.backend import (
    CLAIM_DEFERRED,
    CLAIM_FIELD,
    CLAIM_OUTCOME_FIELD,
    DEFERRAL_FIELD,
)
from workers.runtime.clients import task_index
from workers.runtime.priority import ReplicaAckError
from workers.taskindex.index import (
    CLAIM_CANCELLED,
    CLAIM_DONE,
    CLAIM_FRESH,
    CLAIM_RUN,
)

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


class PoisonTaskError(Exception):
    """The task's worker process died every time it ran it; it is not run again."""


MAX_WORKER_LOSSES = 3
# What publishing a deferred copy may fail with (`PlatformTask._put_back`).
PUT_BACK_ERRORS = (ReplicaAckError, OperationalError, redis.exceptions.RedisError, OSError)
DUPLICATE_RECHECK = CLAIM_FRESH


class ClawRequest(Request):
    """How a worker handles one task message, beyond Celery's defaults.

    - Time limits: Celery arms the hard limit only after the soft one fires, so a
      per-call `time_limit=10` under the default `soft_time_limit=300` would let the
      task run for 300 s. When the soft limit is not below the hard one, it is set to
      90% of it.
    - A claim token per delivery, for the claim made right before the task runs (see
      `PlatformTask.before_start`); the worker keeps it fresh every heartbeat.
    - Poison messages: with `task_reject_on_worker_lost` a task whose process dies is
      requeued forever. After `MAX_WORKER_LOSSES` deaths it ends FAILURE instead.
    """

    SOFT_SHARE = 0.9

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        hard, soft = self.time_limits
        hard = hard or self.task.time_limit
        soft = soft or self.task.soft_time_limit
        if hard and soft and soft >= hard:
            self.time_limits = (hard, hard * self.SOFT_SHARE)
        # Per delivery: a message restored after the visibility timeout keeps its
        # delivery tag, so the tag cannot tell the copies apart. The token travels to the
        # pool process with the request; the claim is made there, with STARTED.
        self.claim_token = uuid.uuid4().hex
        # Private, as are `_context` and `task_ready`: see workers/runtime/internals.py.
        self._request_dict[CLAIM_FIELD] = self.claim_token  # type: ignore[attr-defined]

    def on_failure(
        self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False
    ) -> Any:
        exc = exc_info.exception
        exc = getattr(exc, "exc", exc)  # ExceptionWithTraceback
        if isinstance(exc, WorkerLostError | SystemExit) and self.task.acks_late:
            try:
                losses = task_index().count_worker_loss(self.id)
                if losses >= MAX_WORKER_LOSSES:
                    return self._fail_poison(losses)
                task_index().release(self.id)
            except redis.exceptions.RedisError as exc_redis:
                logger.warning("could not count worker losses of %s: %s", self.id, exc_redis)
        return super().on_failure(exc_info, send_failed_event, return_ok)

    def _fail_poison(self, losses: int) -> None:
        poison = PoisonTaskError(
            f"the worker process died {losses} times while running this task "
            f"(killed or crashed); it is not run again"
        )
        logger.error("task %s[%s] failed: %s", self.name, self.id, poison)
        task_ready(self)
        context = self._context  # type: ignore[attr-defined]
        self.task.backend.mark_as_failure(self.id, poison, request=context)
        self.send_event("task-failed", exception=repr(poison))
        self.acknowledge()


class PlatformTask(Task):
    """The platform's delivery contract, for every task on the app.

    It is the app's default task class (`task_cls` in `workers/celery_app.py`), so a
    plain `@celery_app.task` or `@shared_task` gets it too; a task declared with
    `base=celery.Task` opts out, and the worker names it in a warning at start-up.

    Rate limits: the task's `rate_limit` (Celery's option) holds for the whole platform;
    a delivery with no free slot waits, as a copy due when one frees up
    (`workers/runtime/rate_limit.py`), without running, failing or counting a retry.

    Claim before running: the STARTED write also claims the task for this delivery in
    the index (`claim_start.lua`, one Redis call; with REDIS_REPLICA_ACKS the claim first,
    run only once a replica holds it). Cancels recorded in the index are
    honoured by every worker, also ones started after the cancel (Celery keeps revokes
    in each worker's memory only); a duplicate delivery of a finished task is dropped,
    and one of a task running under another live delivery (Redis redelivers
    unacknowledged messages after the visibility timeout, ETA tasks included) is put
    back to be checked later. Neither runs the task body. A task whose worker process
    dies `MAX_WORKER_LOSSES` times fails (`ClawRequest`).
    """

    abstract = True
    # Celery takes the class or its dotted path; celery-types knows the path only.
    Request = ClawRequest  # type: ignore[assignment]
    # The setting whose value replaces the declared `rate_limit` (the built-in tasks:
    # AI_RATE_LIMIT, VECTORIZE_RATE_LIMIT); either is enforced platform-wide before the
    # claim (`workers/runtime/rate_limit.py`).
    global_rate_setting: str = ""

    @classmethod
    def bind(cls, app: Any) -> Any:
        """Celery's binding to the app, which fills unset options from its config; then a
        task declaring only `time_limit` below the app's soft limit (`time_limit=60` under
        TASK_SOFT_TIME_LIMIT=300) gets its soft limit below the hard one, as `ClawRequest`
        does per call: Celery's `apply_async` would refuse to send it otherwise."""
        declared_soft = cls.__dict__.get("soft_time_limit") is not None
        bound = super().bind(app)
        hard, soft = cls.time_limit, cls.soft_time_limit
        if hard and soft and soft > hard and not declared_soft:
            cls.soft_time_limit = hard * ClawRequest.SOFT_SHARE  # type: ignore[assignment]
        return bound

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        outcome = getattr(self.request, CLAIM_OUTCOME_FIELD, CLAIM_RUN)
        if outcome == CLAIM_RUN:
            return
        if outcome == CLAIM_CANCELLED:
            logger.info("%s[%s] was cancelled before it started", self.name, task_id)
            self.backend.mark_as_revoked(task_id, "cancelled", request=self.request)
            self.send_event("task-revoked", terminated=False, signum=None, expired=False)
        elif outcome == CLAIM_DONE:
            logger.warning("dropping a duplicate of finished %s[%s]", self.name, task_id)
        elif outcome == CLAIM_DEFERRED:
            self._defer_for_rate(getattr(self.request, DEFERRAL_FIELD))
        else:
            self._defer_duplicate()
        # Acknowledged without running: the task's state stays as it is.
        raise Ignore()

    def _defer_duplicate(self) -> None:
        """Another live delivery holds the task: look again later instead of dropping it.

        Liveness is a heartbeat, so the holder may have just died; dropping this copy
        could lose the task. A copy is published again (before this one is acknowledged)
        to be checked after the liveness window: by then the task has finished, or its
        holder is known dead and this copy runs it.
        """
        logger.warning(
            "%s[%s] is running under another delivery; checking again in %ss",
            self.name, self.request.id, DUPLICATE_RECHECK,
        )  # fmt: skip
        self._put_back(countdown=DUPLICATE_RECHECK)

    def _defer_for_rate(self, deferral: Any) -> None:
        """No slot of the task's rate limit was free (`rate_limit.take_slot`): a copy is
        published to run when one frees up (before this one is acknowledged), with the
        same retry count, so waiting never uses up `max_retries`; the record says why."""
        run_at = datetime.now(UTC) + timedelta(seconds=deferral.countdown)
        logger.info(
            "%s[%s] waits %.1fs: %s",
            self.name,
            self.request.id,
            deferral.countdown,
            deferral.reason,
        )
        self._put_back(eta=run_at)
        try:
            task_index().waiting(str(self.request.id), deferral.reason, run_at.isoformat())
        except PUT_BACK_ERRORS:
            logger.warning("could not record why %s waits", self.request.id)

    def _put_back(self, **options: Any) -> None:
        """Publish a copy of this delivery to run later (before this one is acknowledged).
        When the copy cannot be published (Redis down, or too few replicas acknowledged it)
        the message itself goes back to its queue: the task is never dropped or failed
        for it."""
        try:
            self.signature_from_request(
                self.request, headers=deferred_headers(self.request), **options
            ).apply_async()
        except PUT_BACK_ERRORS as exc:
            logger.warning("could not put %s back (%s): requeued", self.request.id, exc)
            raise Reject(str(exc), requeue=True) from exc

    def retry(self, *args: Any, **kwargs: Any) -> Any:
        """Celery's retry, except that a retry it cannot publish keeps the task.

        When the broker is down the new message cannot be sent and Celery drops the
        task (Reject without requeue: FAILURE). The message is put back instead, to run
        again once Redis is back.
        """
        try:
            return super().retry(*args, **kwargs)
        except Reject as exc:
            # `requeue` and `reason` are public attributes that celery-types leaves out.
            if exc.requeue:  # type: ignore[attr-defined]
                raise
            logger.warning("retry of %s could not be published; requeued", self.request.id)
            raise Reject(exc.reason, requeue=True) from None  # type: ignore[attr-defined]


def deferred_headers(request: Any) -> dict[str, Any]:
    """The headers of a duplicate put back to be checked later: the task's own (its owner
    above all; Celery replaces the message's headers with the ones given, it does not
    merge them), marked as deferred."""
    headers = {**(request.headers or {}), DEFERRED_HEADER: "1"}
    if request.get(OWNER_HEADER):
        headers[OWNER_HEADER] = request.get(OWNER_HEADER)
    return headers


class BaseTaskWithRetry(PlatformTask):
    """Retries transient faults with exponential backoff; anything else fails at once.

    After `max_retries` retries the task ends FAILURE with the last error. The delivery
    guarantees come from `PlatformTask`; this class adds the retry policy only. Celery's
    own task options hold on top of it: `retry_backoff`, `retry_backoff_max` and
    `retry_jitter` replace the platform's backoff (RETRY_BACKOFF_BASE...) when given,
    `dont_autoretry_for` fails those errors at once, and `autoretry_for` retries more
    errors as Celery documents.
    """

    abstract = True
    max_retries = 3
    transient_errors = TRANSIENT_ERRORS

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except self.transient_errors as exc:
            if self.request.called_directly or isinstance(exc, self._never_retried()):
                raise
            raise self.retry(exc=exc, countdown=self.retry_countdown(exc)) from exc

    def _never_retried(self) -> tuple[type[BaseException], ...]:
        """Celery's `dont_autoretry_for`: errors that fail at once, transient or not."""
        return tuple(getattr(self, "dont_autoretry_for", ()) or ())

    def failed_attempts(self) -> int:
        """Retries caused by failures so far: the exponent of the next backoff."""
        return int(self.request.retries or 0)

    def retry_countdown(self, exc: BaseException) -> float:
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return float(retry_after)
        factor = getattr(self, "retry_backoff", False)
        if factor:
            # Celery's own backoff options, read as its `autoretry_for` reads them.
            return get_exponential_backoff_interval(
                factor=int(max(1.0, float(factor))),
                retries=self.failed_attempts(),
                maximum=int(getattr(self, "retry_backoff_max", 600)),
                full_jitter=bool(getattr(self, "retry_jitter", True)),
            )
        settings = get_settings()
        return backoff_seconds(
            self.failed_attempts(),
            base=settings.retry_backoff_base,
            maximum=settings.retry_backoff_max,
            jitter=settings.retry_jitter,
        )


def tasks_outside_the_contract(tasks: Mapping[str, Task]) -> tuple[list[str], list[str]]:
    """Registered tasks the delivery guarantees do not cover, by name: those whose class
    does not derive from `PlatformTask` (declared with `base=celery.Task`), and those
    that never store STARTED (`ignore_result`, `track_started=False`), which is when the
    claim is made. Celery's own tasks (`celery.*`: chords, groups) are left out."""
    opted_out: list[str] = []
    unclaimed: list[str] = []
    for name, task in sorted(tasks.items()):
        if name.startswith("celery."):
            continue
        if not isinstance(task, PlatformTask):
            opted_out.append(name)
        elif task.ignore_result or not task.track_started:
            unclaimed.append(name)
    return opted_out, unclaimed


@worker_ready.connect
def _warn_tasks_outside_the_contract(sender: Any = None, **_: Any) -> None:
    opted_out, unclaimed = tasks_outside_the_contract(sender.app.tasks)
    if opted_out:
        logger.warning(
            "tasks without the platform's delivery guarantees (durable cancel, duplicate "
            "drop, poison cap), their class does not derive from %s.PlatformTask: %s",
            __name__, ", ".join(opted_out),
        )  # fmt: skip
    if unclaimed:
        logger.warning(
            "tasks that skip the claim before running (ignore_result or track_started "
            "off), so cancels and duplicate deliveries are not checked: %s",
            ", ".join(unclaimed),
        )
