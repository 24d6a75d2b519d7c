"""Publishing tasks from the event loop: the record and the message in one Redis call.

Celery builds every message (`send_task`: routing, headers, the `task-sent` event) and
kombu decides the Redis commands that deliver it (the queue's priority list, the event
topic), exactly as for any other client. Only the last step differs: instead of running
those commands through kombu's blocking client, the publisher keeps them (kombu's private
publish batch: `workers.runtime.internals.PublishCapture`) and runs them with the index
record in one script (workers/taskindex/scripts/publish.lua) on the gateway's asyncio
client. So a submission costs one round trip, needs no thread, and no message exists
without its record.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

import redis.asyncio
import redis.exceptions
from celery import Celery
from kombu.common import maybe_declare
from kombu.exceptions import OperationalError

from service.errors import ServiceUnavailable
from service.message_templates import MessageTemplates, Request
from service.redis_pipe import RedisPipe
from workers.core.headers import INDEXED_HEADER
from workers.core.queues import TASK_QUEUES
from workers.core.telemetry import publishing
from workers.runtime.internals import PublishCapture
from workers.taskindex.confirmation import FIELD as CONFIRM_FIELD
from workers.taskindex.confirmation import unconfirmed
from workers.taskindex.lua_scripts import PUBLISH_COMMANDS, RecordUpdate, publish_call, source

logger = logging.getLogger(__name__)


class TaskPublisher:
    """Sends tasks by name; `start()` opens the kombu channel that shapes the messages."""

    def __init__(
        self, celery: Celery, client: redis.asyncio.Redis, ttl: int, *,
        replica_acks: int = 0, replica_ack_timeout_ms: int = 500, pipe: RedisPipe | None = None,
    ) -> None:  # fmt: skip
        """`pipe`, when given, carries the publish script (shared with the other requests
        of the same turn of the event loop); under replica acknowledgement the script and
        its WAIT go on a connection of their own, as a WAIT holds every reply behind it."""
        self._celery = celery
        self._client = client
        self._ttl = ttl
        self._replica_acks = replica_acks
        self._replica_ack_timeout_ms = replica_ack_timeout_ms
        self._script = client.register_script(source("publish"))
        self._pipelined = pipe.register_script(source("publish")) if pipe else self._script
        self._connection: Any = None
        self._producer: Any = None
        self._events: Any = None
        self._capture: PublishCapture | None = None
        self._executor: Any = None
        self._opening = asyncio.Lock()
        self._templates = MessageTemplates(celery, self._celery_commands)

    async def start(self, executor: Any) -> None:
        """Open the kombu channel now if Redis is up (else on the first publish)."""
        self._executor = executor
        try:
            await self._ensure_open()
        except ServiceUnavailable:
            logger.warning("broker unreachable at start-up; the publisher connects on first use")

    async def _ensure_open(self) -> None:
        if self._producer is not None:
            return
        async with self._opening:
            if self._producer is None:
                loop = asyncio.get_running_loop()
                try:
                    await loop.run_in_executor(self._executor, self._open)
                except (OperationalError, redis.exceptions.RedisError, OSError) as exc:
                    raise ServiceUnavailable("broker unavailable, task not accepted") from exc

    def _open(self) -> None:
        """Blocking: connect once, declare the queues, keep the channel for shaping."""
        connection = self._celery.connection_for_write()
        try:
            connection.ensure_connection(max_retries=1)
            channel = connection.default_channel
            for queue in self._celery.amqp.queues.values():
                maybe_declare(queue, channel)
        except BaseException:
            connection.release()
            raise
        self._capture = PublishCapture(channel, PUBLISH_COMMANDS)
        # Task-sent events through a dispatcher whose exchange is bound once: kombu
        # re-binds an unbound one (a copy) for every event.
        events = self._celery.events.Dispatcher(channel=channel, enabled=False)
        events.exchange = events.exchange(channel)
        self._events = events
        self._connection = connection
        self._producer = self._celery.amqp.Producer(channel, auto_declare=False)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.release()

    def _commands(self, name: str, task_id: str, **options: Any) -> list[tuple[Any, ...]]:
        """The Redis commands that deliver the task's message and its task-sent event."""
        assert self._capture is not None  # opened with the producer
        with self._capture.capturing() as commands:
            # The queues were declared when the channel opened.
            # Nothing here can fail over to a retry: no I/O happens.
            self._celery.send_task(
                name, task_id=task_id, producer=self._producer, declare=[], retry=False,
                event_dispatcher=self._events, **options,
            )  # fmt: skip
        if not any(c[0] == "lpush" for c in commands):
            raise RuntimeError(f"kombu did not route {name} to a queue")
        return commands

    def _celery_commands(self, request: Request) -> list[tuple[Any, ...]]:
        return self._commands(
            request.name, request.task_id, args=request.args, kwargs=request.kwargs,
            queue=request.queue, priority=request.priority, eta=request.eta,
            headers=request.headers, time_limit=request.time_limit,
            soft_time_limit=request.soft_time_limit,
        )  # fmt: skip

    async def publish(
        self,
        name: str,
        kwargs: dict[str, Any],
        *,
        record: dict[str, Any],
        event: dict[str, Any] | None = None,
        args: list[Any] | None = None,
        priority: int | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        queue: str | None = None,
        task_id: str,
        headers: dict[str, Any] | None = None,
        time_limit: float | None = None,
        soft_time_limit: float | None = None,
    ) -> str:
        """Record the task as PENDING (fields `record`, feed extras `event`) and queue it."""
        await self._ensure_open()
        # The trace goes with the message (`traceparent`): Celery's instrumentation does not
        # see this path.
        with publishing(name, task_id) as trace_headers:
            request = Request(
                name, task_id, args=args, kwargs=kwargs, queue=queue or TASK_QUEUES.get(name),
                priority=priority, eta=eta,
                headers={**(headers or {}), **trace_headers, INDEXED_HEADER: "1"},
                time_limit=time_limit, soft_time_limit=soft_time_limit,
            )  # fmt: skip
            if countdown:  # an eta from Celery's clock: Celery's own message
                commands = self._commands(
                    name, task_id, countdown=countdown, args=args, kwargs=kwargs,
                    queue=request.queue, priority=priority, eta=eta, headers=request.headers,
                    time_limit=time_limit, soft_time_limit=soft_time_limit,
                )  # fmt: skip
            else:
                commands = self._templates.build(request)
            update = RecordUpdate(
                task_id=task_id, state="PENDING", attempt=0, fields=record, event=event,
                ttl=self._ttl,
            )  # fmt: skip
            if self._replica_acks:
                update = unconfirmed(update, self._replica_ack_timeout_ms)
            keys, argv = publish_call(update, commands)
            await self._deliver(name, keys, argv)
        return task_id

    async def _deliver(self, name: str, keys: list[Any], argv: list[Any]) -> None:
        """`_run`, with Redis down or full told to the client as 503."""
        try:
            await self._run(keys, argv)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
            logger.warning("publish of %s failed: %s", name, exc)
            raise ServiceUnavailable("broker unavailable, task not accepted") from exc
        except redis.exceptions.ResponseError as exc:
            if not is_out_of_memory(exc):
                raise
            logger.warning("publish of %s refused: Redis is out of memory", name)
            raise ServiceUnavailable("broker out of memory, task not accepted") from exc

    async def _run(self, keys: list[Any], argv: list[Any]) -> None:
        """The publish script; with replica acknowledgement, WAIT right after it on the
        same connection (one round trip), and a refusal when too few replicas hold it."""
        if not self._replica_acks:
            await self._pipelined(keys=keys, args=argv)
            return
        async with self._client.pipeline(transaction=False) as pipe:
            await self._script(keys=keys, args=argv, client=pipe)
            pipe.execute_command("WAIT", self._replica_acks, self._replica_ack_timeout_ms)
            _, acked = await pipe.execute()
        if int(acked) < self._replica_acks:
            logger.warning(
                "publish held by %s of %s replicas within %s ms: refused",
                acked, self._replica_acks, self._replica_ack_timeout_ms,
            )  # fmt: skip
            raise ServiceUnavailable(
                f"task not confirmed by {self._replica_acks} replica(s), not accepted"
            )
        await self._client.hdel(keys[0], CONFIRM_FIELD)  # confirmed: it may run now


def is_out_of_memory(exc: BaseException) -> bool:
    """Redis with `noeviction` refuses writes past `maxmemory` with an OOM error (also as
    the cause of a failed script or pipeline command)."""
    return isinstance(exc, redis.exceptions.ResponseError) and "used memory > 'maxmemory'" in str(
        exc
    )
