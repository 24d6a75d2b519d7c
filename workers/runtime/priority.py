"""Task priority: 0-9 with 9 the highest, the product's contract, on Redis.

Kombu's Redis transport stores a message of priority N in the list `queue<sep>N` and a
worker drains the lists in ascending order, so 0 runs first. The contract says 9 runs
first. The mapping is done here and nowhere else: a transport whose channel inverts the
priority when it picks the list. Messages keep the priority the client asked for in their
properties, so retries and redeliveries republish it unchanged and never flip it twice.

A message published with no priority would reach kombu as 0, the lowest; the routes in
`celery_config` give every task the default instead (see `DEFAULT_PRIORITY`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.utils.json import dumps as json_dumps

from workers.core.headers import RECORD_HEADER
from workers.core.settings import get_settings
from workers.runtime.internals import PUBLISH_BATCH
from workers.taskindex.confirmation import FIELD as CONFIRM_FIELD
from workers.taskindex.confirmation import unconfirmed
from workers.taskindex.lua_scripts import RecordUpdate, publish_call, refuse_call, source


class ReplicaAckError(RuntimeError):
    """A published task was not held by REDIS_REPLICA_ACKS replicas in time: it was
    refused (it will not run) and the publisher is told, as the gateway answers 503."""


MIN_PRIORITY = 0
MAX_PRIORITY = 9
DEFAULT_PRIORITY = 5
PRIORITY_STEPS = list(range(MIN_PRIORITY, MAX_PRIORITY + 1))


class _HighestFirst:
    """Channel mixin: a message of product priority 9 goes to the list drained first.

    Also reuses one client object for the channel's blocking commands (publish, the
    unacked bookkeeping of every delivery and ack): kombu builds a new `redis.Redis` for
    each, which costs more than the command in a busy worker. Clients are per connection
    pool, so a pool kombu replaces after a reconnect gets a new one.

    Overrides and uses private methods of kombu's channel: workers/runtime/internals.py lists
    them and checks them at start-up.
    """

    # (connection pool, client on it, publish.lua registered on that client)
    _shared: tuple[Any, Any, Any] = (None, None, None)

    def _get_message_priority(self, message: Any, reverse: bool = False) -> int:
        return super()._get_message_priority(message, reverse=not reverse)  # type: ignore[misc]

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        """Deliver a message; with the task's record when its publisher put one in the
        message's headers (`RECORD_HEADER`, see `workers.runtime.signals`): both in one
        script, so neither exists without the other.

        The header is never stored with the message. Once the record is written it is
        also taken out of the headers Celery passes to `after_task_publish` (the same
        dict, see `internals`), which writes a record still there: one this transport
        left to kombu (a publish batch, an expiring queue).
        """
        headers = message.get("headers") or {}
        carried = headers.get(RECORD_HEADER)
        if carried is not None:
            # A copy: kombu may publish the same message again (a retried publish).
            kept = {k: v for k, v in headers.items() if k != RECORD_HEADER}
            message = {**message, "headers": kept}
        expires = getattr(self, "_expires", None)
        if (
            carried is None
            or kwargs.get(PUBLISH_BATCH) is not None
            or (expires and queue in expires)
        ):
            super()._put(queue, message, **kwargs)  # type: ignore[misc]
            return
        key = self._q_for_pri(  # type: ignore[attr-defined]
            queue, self._get_message_priority(message, reverse=False)
        )
        update = RecordUpdate.from_header(carried)
        self._publish_with_record(update, key, message)
        headers.pop(RECORD_HEADER, None)

    def _publish_with_record(self, update: RecordUpdate, key: str, message: Any) -> None:
        """publish.lua; with REDIS_REPLICA_ACKS, WAIT after it on the same connection and
        the task refused when too few replicas hold it."""
        client, publish = self._shared_client()
        settings = get_settings()
        wanted = settings.redis_replica_acks
        if wanted:
            update = unconfirmed(update, settings.redis_replica_ack_timeout_ms)
        keys, args = publish_call(update, [("lpush", key, json_dumps(message))])
        if not wanted:
            publish(keys=keys, args=args)
            return
        with client.pipeline(transaction=False) as pipe:
            publish(keys=keys, args=args, client=pipe)
            pipe.execute_command("WAIT", wanted, settings.redis_replica_ack_timeout_ms)
            _, acked = pipe.execute()
        if int(acked) < wanted:
            refuse_keys, refuse_args = refuse_call(update.task_id)
            client.register_script(source("refuse"))(keys=refuse_keys, args=refuse_args)
            raise ReplicaAckError(
                f"task {update.task_id} held by {acked} of {wanted} replicas: refused"
            )
        client.hdel(keys[0], CONFIRM_FIELD)  # confirmed: it may run now

    def _shared_client(self) -> tuple[Any, Any]:
        """The client of the current connection pool, and publish.lua on it."""
        pool = self.pool  # type: ignore[attr-defined]
        owner, client, publish = self._shared
        if owner is not pool:
            client = self._create_client()  # type: ignore[attr-defined]
            publish = client.register_script(source("publish"))
            self._shared = (pool, client, publish)
        return client, publish

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        yield client or self._shared_client()[0]


class PriorityChannel(_HighestFirst, kombu_redis.Channel):
    pass


class PrioritySentinelChannel(_HighestFirst, kombu_redis.SentinelChannel):
    pass


class PriorityRedisTransport(kombu_redis.Transport):
    Channel = PriorityChannel


class PrioritySentinelTransport(kombu_redis.SentinelTransport):
    Channel = PrioritySentinelChannel


def transport_for(url: str) -> str:
    """The import path of the transport class for a broker URL."""
    sentinel = url.startswith("sentinel://")
    return f"{__name__}:{'PrioritySentinelTransport' if sentinel else 'PriorityRedisTransport'}"
