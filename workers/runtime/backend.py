"""The Redis result backend, extended to keep the task index in step.

Every state a worker stores (STARTED, RETRY, SUCCESS, FAILURE, REVOKED, and failures from
time limits or lost workers) passes through `_store_result`; the index is updated in the
same Redis call as Celery's own write (store_result.lua), from the same request context.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

import redis
from celery import states
from celery.backends.redis import RedisBackend, SentinelBackend
from celery.exceptions import BackendStoreError
from kombu.utils.encoding import bytes_to_str

from workers.core import queues
from workers.core.headers import OWNER_HEADER
from workers.core.keys import task_key
from workers.core.settings import get_settings
from workers.runtime.rate_limit import Deferral, declared_rate, take_slot
from workers.taskindex.confirmation import FIELD as CONFIRM_FIELD
from workers.taskindex.confirmation import REASON as CONFIRM_REASON
from workers.taskindex.confirmation import hold_left
from workers.taskindex.lua_scripts import (
    CLAIM_RUN,
    RecordUpdate,
    claim_start_call,
    source,
    store_result_call,
    unclaim_call,
)
from workers.taskindex.record import PREVIEW_CAP, STATES, TERMINAL_STATES, capped_json, preview

EVENT_RESULT_CAP = 64 * 1024
# A delivery's claim token, in the task's request (set by `ClawRequest`), and the claim's
# outcome, set on the request when STARTED is stored.
CLAIM_FIELD = "claw_claim"
CLAIM_OUTCOME_FIELD = "claw_claim_outcome"
# The outcome of a delivery that found no free slot of its task's rate limit (no claim was
# made, nothing stored), and the `rate_limit.Deferral` saying when it may run.
CLAIM_DEFERRED = -1
DEFERRAL_FIELD = "claw_deferral"
# A claim no replica acknowledged (REDIS_REPLICA_ACKS): the delivery tries again this much
# later (`_IndexedMixin._claim`).
UNACKED_RECHECK = 1.0
UNACKED_REASON = "waiting for a replica to acknowledge its claim"
# Times a final state no replica acknowledged is written and waited for again
# (`_IndexedMixin._run_replicated`) before the message is acknowledged all the same.
FINAL_ACK_ROUNDS = 6
REDIS_ERRORS = (redis.exceptions.RedisError, OSError)

logger = logging.getLogger(__name__)


def feed_extra(result: Any, state: str, fields: dict[str, Any]) -> dict[str, Any]:
    """What the live feed's event for this state carries besides the state itself."""
    extra: dict[str, Any] = {}
    if fields.get("worker"):
        extra["worker"] = fields["worker"]
    if state == states.SUCCESS:
        _, cut = capped_json(result, EVENT_RESULT_CAP)
        extra["result"] = None if cut else result
        if cut:
            extra["result_truncated"] = True
    elif "error_type" in fields:
        extra["error"] = {"type": fields["error_type"], "message": fields["error_message"]}
    return extra


def index_fields(result: Any, state: str, traceback: str | None, request: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if request is not None:
        delivery = getattr(request, "delivery_info", None) or {}
        name = getattr(request, "task", None) or getattr(request, "name", None)
        fields["name"] = queues.canonical_name(name) if name else None
        fields["queue"] = delivery.get("routing_key")
        fields["retries"] = str(getattr(request, "retries", 0) or 0)
        hostname = getattr(request, "hostname", None)
        if hostname:
            fields["worker"] = hostname
    now = time.time()
    if state == states.STARTED:
        fields["started_at"] = repr(now)
        fields["waiting_reason"] = ""  # it waits no more (`TaskIndex.waiting`)
    elif state == states.SUCCESS:
        fields["result_preview"] = preview(result)
    elif state == states.RETRY:
        # Waiting again: a cancel may still stop it, and any worker may run it next.
        fields["claimed"] = "0"
        fields["claimed_by"] = ""
    if state in (states.FAILURE, states.RETRY, states.REVOKED):
        error = result if isinstance(result, dict) else {}
        fields["error_type"] = error.get("exc_type") or type(result).__name__
        message = error.get("exc_message", result)
        if isinstance(message, list | tuple) and len(message) == 1:
            message = message[0]
        fields["error_message"] = str(message)[: PREVIEW_CAP * 4]
        if traceback:
            fields["traceback"] = capped_json(traceback, 64 * 1024)[0]
    return fields


class _IndexedMixin:
    """One Redis call per state: Celery's result write and the index update together.

    Celery's own `_store_result` reads the stored meta (to never overwrite a SUCCESS),
    then writes and publishes it: two round trips, and the index update made a third.
    store_result.lua does all of it in one, atomically.

    `_store_result` and what it calls are Celery internals: workers/runtime/internals.py lists
    them and checks them at start-up.
    """

    _MAX_STR_VALUE_SIZE: int
    expires: int | None
    failure_expires: int | None

    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: str | None = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        meta = self._get_result_meta(  # type: ignore[attr-defined]
            result=result, state=state, traceback=traceback, request=request
        )
        meta["task_id"] = bytes_to_str(task_id)
        value = self.encode(meta)  # type: ignore[attr-defined]
        if isinstance(value, str) and len(value) > self._MAX_STR_VALUE_SIZE:
            # (Celery's error takes these keywords; celery-types does not know them.)
            raise BackendStoreError(  # type: ignore[call-arg]
                "value too large for Redis backend", state=state, task_id=task_id
            )
        expires = self.failure_expires if state == states.FAILURE else self.expires
        attempt = getattr(request, "retries", None) if request is not None else None
        fields = index_fields(result, state, traceback, request)
        # A custom state (`update_state(state="PROGRESS")`) is Celery's meta only: the
        # record keeps one of the index's states (progress has `report_progress`).
        update = RecordUpdate(
            task_id=task_id, state=state if state in STATES else None, attempt=attempt,
            fields=fields,
            event=feed_extra(result, state, fields), ttl=get_settings().task_history_ttl,
        )  # fmt: skip
        result_key = self.get_key_for_task(task_id)  # type: ignore[attr-defined]
        token = getattr(request, CLAIM_FIELD, None) if state == states.STARTED else None
        if token and self._deferred(request):
            return result  # no slot of its rate limit: it stays waiting, nothing stored
        if token:
            # Right before the task runs (`track_started`): the claim goes with it; the
            # task itself reads the outcome (`PlatformTask.before_start`).
            setattr(
                request,
                CLAIM_OUTCOME_FIELD,
                self._claim(update, result_key, value, expires, request, token),
            )
        else:
            keys, args = store_result_call(update, result_key, value, expires)
            if state in states.READY_STATES:
                self.ensure(self._run_replicated, (self._store, keys, args))  # type: ignore[attr-defined]
            else:
                self.ensure(self._run_script, (self._store, keys, args))  # type: ignore[attr-defined]
        return result

    def _claim(
        self,
        update: RecordUpdate,
        result_key: Any,
        value: Any,
        expires: int | None,
        request: Any,
        token: str,
    ) -> int:
        """The claim and STARTED in one call (claim_start.lua). With REDIS_REPLICA_ACKS it
        is replicated (WAIT) before the task runs; a claim no replica acknowledged is given
        up and the delivery deferred: a failover (or a Sentinel split brain, two primaries
        for a while) could lose it, and a second delivery of the message, its pop lost
        too, would then run the task again. (The record keeps STARTED, unclaimed, as after
        a worker's death: any delivery may run it.)"""
        keys, args = claim_start_call(
            update, result_key, value, expires, token=token, now=time.time()
        )
        wanted = get_settings().redis_replica_acks
        if not wanted:
            (outcome,) = self.ensure(self._run_script, (self._claim_start, keys, args))  # type: ignore[attr-defined]
            return int(outcome)
        (outcome,), acked = self.ensure(self._run_waited, (self._claim_start, keys, args))  # type: ignore[attr-defined]
        if int(outcome) != CLAIM_RUN or acked >= wanted:
            return int(outcome)
        logger.warning(
            "claim of %s held by %s of %s replicas: not run now", update.task_id, acked, wanted
        )
        try:
            self._unclaim(*unclaim_call(update.task_id, token))
        except REDIS_ERRORS:
            pass  # the claim goes stale instead (CLAIM_FRESH seconds)
        setattr(request, DEFERRAL_FIELD, Deferral(UNACKED_RECHECK, UNACKED_REASON))
        return CLAIM_DEFERRED

    def _run_replicated(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """A final state: with REDIS_REPLICA_ACKS, WAIT for the replicas after writing it
        before the worker acknowledges the message (late ack): a failover then finds the
        task finished, not ready to run again.

        Not acknowledged in time, it is written again and waited for, up to
        `FINAL_ACK_ROUNDS` times: the primary may have been isolated (a Sentinel split
        brain) and about to be made a replica, its writes dropped; the next round then
        reaches the real primary. Meanwhile the task's claim stays fresh (the worker runs
        it still), so no other delivery and no recovery runs it again."""
        wanted = get_settings().redis_replica_acks
        if not wanted:
            return script(keys=keys, args=args)
        outcome, acked = self._run_waited(script, keys, args)
        for _ in range(FINAL_ACK_ROUNDS - 1):
            if acked >= wanted:
                break
            logger.warning(
                "final state of %s held by %s of %s replicas: writing it again",
                keys[1], acked, wanted,
            )  # fmt: skip
            # store_result.lua finishes a task once: where the state is already final it
            # writes nothing, so a no-op write to the record makes the WAIT cover it.
            _, acked = self._run_waited(script, keys, args, touch=keys[1])
        if acked < wanted:
            logger.error("final state of %s held by %s of %s replicas", keys[1], acked, wanted)
        return outcome

    def _run_waited(
        self, script: Any, keys: list[str], args: list[Any], touch: str | None = None
    ) -> tuple[Any, int]:
        """The script, then WAIT on the same connection: its outcome and how many replicas
        acknowledged it within REDIS_REPLICA_ACK_FINAL_TIMEOUT_MS."""
        settings = get_settings()
        with self.client.pipeline(transaction=False) as pipe:  # type: ignore[attr-defined]
            script(keys=keys, args=args, client=pipe)
            if touch is not None:
                pipe.hincrby(touch, "deliveries", 0)
            pipe.execute_command(
                "WAIT", settings.redis_replica_acks, settings.redis_replica_ack_final_timeout_ms
            )
            replies = pipe.execute()
        return replies[0], int(replies[-1])

    def _deferred(self, request: Any) -> bool:
        """Whether the delivery about to run must wait: for its publisher's replica
        acknowledgement (`workers.taskindex.confirmation`), or for a slot of its task's
        platform-wide rate limit (`rate_limit.take_slot`); the task reads why in
        `before_start`."""
        task = self.app.tasks.get(getattr(request, "task", None) or "")  # type: ignore[attr-defined]
        rate = declared_rate(task) if task is not None else None
        held = get_settings().redis_replica_acks > 0
        if rate is None and not held:
            return False
        state, cancelled, confirm_by = self.client.hmget(  # type: ignore[attr-defined]
            task_key(request.id), "state", "cancel_requested", CONFIRM_FIELD
        )
        if cancelled == b"1" or bytes_to_str(state or b"") in TERMINAL_STATES:
            return False  # no slot for a copy the claim drops (cancelled, finished)
        left = hold_left(confirm_by) if held else 0.0
        if left:
            deferral: Deferral | None = Deferral(countdown=left + 0.1, reason=CONFIRM_REASON)
        elif rate is not None:
            deferral = take_slot(self.client, task, request.get(OWNER_HEADER))  # type: ignore[attr-defined]
        else:
            deferral = None
        if deferral is None:
            return False
        setattr(request, CLAIM_OUTCOME_FIELD, CLAIM_DEFERRED)
        setattr(request, DEFERRAL_FIELD, deferral)
        return True

    @functools.cached_property
    def _store(self) -> Any:
        return self.client.register_script(source("store_result"))  # type: ignore[attr-defined]

    @functools.cached_property
    def _claim_start(self) -> Any:
        return self.client.register_script(source("claim_start"))  # type: ignore[attr-defined]

    @functools.cached_property
    def _unclaim_script(self) -> Any:
        return self.client.register_script(source("unclaim"))  # type: ignore[attr-defined]

    def _unclaim(self, keys: list[str], args: list[Any]) -> Any:
        return self._unclaim_script(keys=keys, args=args)

    @staticmethod
    def _run_script(script: Any, keys: list[str], args: list[Any]) -> Any:
        return script(keys=keys, args=args)


class IndexedRedisBackend(_IndexedMixin, RedisBackend):
    pass


class IndexedSentinelBackend(_IndexedMixin, SentinelBackend):
    pass


def backend_url(url: str) -> str:
    """`module:Class+url`: Celery's way to name a backend class for a URL."""
    cls = "IndexedSentinelBackend" if url.startswith("sentinel://") else "IndexedRedisBackend"
    return f"{__name__}:{cls}+{url}"
