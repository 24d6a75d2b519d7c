"""The live feed: one reader per gateway process, fanned out to every websocket client.

Two sources (see docs/websocket.md):
- the durable Redis stream `claw:feed` (task states, progress, chunks, notifications),
  read with XREAD; its entry ids are the events' ids, so clients can resume;
- Celery events over Redis pub/sub (worker online/heartbeat/offline, task-received), for
  live worker status; these are not replayed.

Browser sessions that end (logout, a removed key) are announced on a pub/sub channel read
by the same connection, and every process closes their websockets with code 4001; a
periodic check catches sessions that expired or whose announcement was missed.

Each client has a bounded queue drained by its own writer task, so a slow client delays
nobody: on overflow its queue is dropped for a `resync` message, and a second overflow
before it read that closes it with code 4008.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast

import redis.asyncio
import redis.exceptions
from aiohttp import WSCloseCode, web

from service.auth import Principal
from service.coverage import mark_left
from service.sessions import SessionStore
from workers.core.keys import FEED_STREAM, SESSION_ENDED_CHANNEL, task_key
from workers.taskindex.status import iso, on_the_wire

logger = logging.getLogger(__name__)

SESSION_ENDED = 4001
SLOW_CONSUMER = 4008
READ_BLOCK_MS = 2000
READ_COUNT = 500
WORKER_PUSH_EVERY = 2.0  # seconds between a worker's live heartbeat messages
WORKER_TIMEOUT = 10.0
OWNER_CACHE = 50_000
YIELD_EVERY = 20


def stream_id(value: str) -> tuple[int, int]:
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)


def message(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "task_id": None, "state": None, "ts": iso(time.time()), **fields}


SUBSCRIPTION_KINDS = ("task_ids", "queues", "names")
# How much one connection may subscribe to (WS_MAX_TASK_IDS, WS_MAX_NAMES).
DEFAULT_LIMITS = {"task_ids": 1000, "queues": 100, "names": 100}
# A stats message shows a user its own counts only: live workers, queue depths and the
# throughput of every owner are the operators' (admin) view.
OPERATOR_STATS = ("workers", "queues", "tasks_per_minute")
# The event field each kind of subscription matches.
EVENT_FIELD = {"task_ids": "task_id", "queues": "queue", "names": "name"}
# A stream entry as the gateway's client returns it: redis-py types its replies for every
# connection mode (bytes or str, RESP2 or RESP3), ours decodes responses and speaks RESP2.
Entry = tuple[str, dict[str, str]]


class SubscriptionIndex:
    """Which clients named which task, queue or name, and which asked for everything: an
    event is checked against those clients only, not against every connected one."""

    def __init__(self) -> None:
        self.by_kind: dict[str, dict[str, set[Client]]] = {k: {} for k in SUBSCRIPTION_KINDS}
        self.everything: set[Client] = set()

    def add(self, client: Client, kind: str, values: set[str]) -> None:
        table = self.by_kind[kind]
        for value in values:
            table.setdefault(value, set()).add(client)

    def remove(self, client: Client, kind: str, values: set[str]) -> None:
        table = self.by_kind[kind]
        for value in values:
            holders = table.get(value)
            if holders is not None:
                holders.discard(client)
                if not holders:
                    del table[value]

    def drop(self, client: Client) -> None:
        for kind in SUBSCRIPTION_KINDS:
            self.remove(client, kind, getattr(client.subscription, kind))
        self.everything.discard(client)

    def candidates(self, event: dict[str, Any]) -> set[Client]:
        found = set(self.everything)
        for kind, field in EVENT_FIELD.items():
            value = event.get(field)
            if value is not None:
                found |= self.by_kind[kind].get(value, set())
        return found


class SubscriptionLimitExceeded(Exception):
    """A subscribe would pass a cap; nothing of it was applied."""

    def __init__(self, kind: str, limit: int) -> None:
        super().__init__(f"at most {limit} {kind} per connection")
        self.kind = kind
        self.limit = limit


class Subscription:
    def __init__(self, limits: dict[str, int] | None = None) -> None:
        self.limits = limits or DEFAULT_LIMITS
        self.task_ids: set[str] = set()
        self.queues: set[str] = set()
        self.names: set[str] = set()
        self.all = False
        # Kept in step once the client is registered with a hub.
        self.index: tuple[SubscriptionIndex, Client] | None = None

    def update(self, data: dict[str, Any], add: bool) -> None:
        """Add or remove; raises SubscriptionLimitExceeded, changing nothing, when an add
        would leave more than a cap allows."""
        changes: dict[str, set[str]] = {}
        for attr in SUBSCRIPTION_KINDS:
            values = {str(v) for v in data.get(attr) or () if v}
            target: set[str] = getattr(self, attr)
            changes[attr] = values - target if add else values & target
            if add and len(target) + len(changes[attr]) > self.limits[attr]:
                raise SubscriptionLimitExceeded(attr, self.limits[attr])
        for attr, changed in changes.items():
            target = getattr(self, attr)
            if add:
                target |= changed
            else:
                target -= changed
            if self.index is not None and changed:
                index, client = self.index
                (index.add if add else index.remove)(client, attr, changed)
        if "all" in data:
            self.all = bool(data["all"]) if add else (False if data["all"] else self.all)
            if self.index is not None:
                index, client = self.index
                if self.all:
                    index.everything.add(client)
                else:
                    index.everything.discard(client)

    def matches(self, event: dict[str, Any]) -> bool:
        return (
            self.all
            or event.get("task_id") in self.task_ids
            or event.get("queue") in self.queues
            or event.get("name") in self.names
        )


class Client:
    """One websocket connection: its principal, subscription and outgoing queue."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        principal: Principal,
        buffer: int,
        transport: asyncio.BaseTransport | None = None,
        limits: dict[str, int] | None = None,
    ) -> None:
        self.ws = ws
        self.transport = transport
        self.principal = principal
        self.subscription = Subscription(limits)
        # Items are (text, is_resync).
        self.queue: asyncio.Queue[tuple[str, bool]] = asyncio.Queue(maxsize=buffer)
        self.resync_pending = False
        self.holding: list[tuple[str | None, str]] | None = None
        self.closing = False
        self.writer: asyncio.Task[None] | None = None
        # A close started from outside the connection's handler (session ended, slow
        # consumer); the handler waits for it before it lets the connection go.
        self.closer: asyncio.Task[None] | None = None

    def may_see(self, event: dict[str, Any]) -> bool:
        if self.principal.is_admin:
            return True
        kind = event.get("type")
        if kind == "worker":
            return False  # hostnames and fleet status are operators' data
        if kind in ("stats", "resync"):
            return True
        owner = event.get("owner")
        return owner is not None and owner == self.principal.owner

    def wants(self, event: dict[str, Any]) -> bool:
        if event.get("type") == "notification":
            return self.may_see(event)
        return self.subscription.matches(event) and self.may_see(event)

    def offer(self, text: str, event_id: str | None = None) -> None:
        """Queue a message without ever waiting."""
        if self.closing:
            return
        if self.holding is not None:
            self.holding.append((event_id, text))
            if len(self.holding) > self.queue.maxsize:
                self.holding = None
                self._overflow()
            return
        self.enqueue(text)

    def enqueue(self, text: str) -> None:
        try:
            self.queue.put_nowait((text, False))
        except asyncio.QueueFull:
            self._overflow()

    def _overflow(self) -> None:
        if self.resync_pending:
            self.close_soon(SLOW_CONSUMER, b"slow consumer")
            return
        while not self.queue.empty():
            self.queue.get_nowait()
        self.resync_pending = True
        self.queue.put_nowait((json.dumps(message("resync", reason="buffer overflow")), True))

    async def run_writer(self) -> None:
        while True:
            text, is_resync = await self.queue.get()
            await self.ws.send_str(text)
            if is_resync:
                self.resync_pending = False

    def close_soon(self, code: int, reason: bytes) -> None:
        if self.closer is None:
            self.closing = True
            self.closer = asyncio.get_running_loop().create_task(self.close(code, reason))

    async def close(self, code: int, reason: bytes) -> None:
        self.closing = True
        if self.writer is not None:
            self.writer.cancel()
        if code == SLOW_CONSUMER:
            # Its socket buffer is full: a close frame would wait behind it forever.
            self.abort()
            return
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=reason), 1.0)
        except (TimeoutError, ConnectionError, RuntimeError):
            self.abort()

    def abort(self) -> None:
        """Drop the connection now, whatever is still unsent."""
        if self.transport is not None:
            self.transport.abort()  # type: ignore[attr-defined]


class TaskWatch:
    """One SSE stream's view of one task's numbered events: a bounded queue the hub fills
    without ever waiting, and the reason the stream must end (`overflow`, a shutdown)."""

    def __init__(self, task_id: str, limit: int) -> None:
        self.task_id = task_id
        self.limit = limit
        self.events: collections.deque[dict[str, Any]] = collections.deque()
        self.ended: str | None = None
        self.wakeup = asyncio.Event()

    def offer(self, event: dict[str, Any]) -> None:
        if self.ended is not None:
            return
        if len(self.events) >= self.limit:
            self.events.clear()
            self.end("slow reader")
        else:
            self.events.append(event)
        self.wakeup.set()

    def end(self, reason: str) -> None:
        self.ended = self.ended or reason
        self.wakeup.set()


StatsFn = Callable[[str | None], Awaitable[dict[str, Any]]]


class FeedHub:
    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        db: int,
        buffer: int,
        stats_interval: float,
        stats: StatsFn,
        sessions: SessionStore | None = None,
        limits: dict[str, int] | None = None,
        reader: redis.asyncio.Redis | None = None,
    ) -> None:
        """`reader`, when given, carries the blocking stream read and the pub/sub: a client
        that does not retry a lost connection unseen, so the readers know they reconnected
        (the stream's history is checked then). Replays and lookups stay on `client`."""
        self.redis = client
        self.reader = reader or client
        self.db = db
        self.buffer = buffer
        self.stats_interval = stats_interval
        self.stats = stats
        self.sessions = sessions
        self.limits = limits or DEFAULT_LIMITS
        self.clients: set[Client] = set()
        self.last_id: str | None = None
        self._owners: dict[str, str | None] = {}
        self._workers: dict[str, float] = {}
        self._worker_pushed: dict[str, float] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._index = SubscriptionIndex()
        # Per-task SSE streams (service/views/stream.py) by task id: they get the task's
        # numbered events (those with a `seq`).
        self.task_watches: dict[str, set[TaskWatch]] = {}

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._guard(self._read_stream), name="feed-stream"),
            loop.create_task(self._guard(self._read_pubsub), name="feed-pubsub"),
            loop.create_task(self._guard(self._tick), name="feed-tick"),
        ]

    async def stop(self) -> None:
        # redis-py can swallow a cancel that lands as its read times out (the task goes on
        # reading): the readers also check `_stopping`, so each ends within one read.
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for watches in list(self.task_watches.values()):
            for watch in list(watches):
                watch.end("server shutdown")
        await asyncio.gather(
            *(c.close(WSCloseCode.GOING_AWAY, b"server shutdown") for c in list(self.clients)),
            return_exceptions=True,
        )

    async def _guard(self, body: Callable[[], Awaitable[None]]) -> None:
        """Keep a reader alive through Redis outages: log, wait, go on."""
        while not self._stopping:
            try:
                await body()
            except asyncio.CancelledError:
                raise
            except (redis.exceptions.RedisError, OSError) as exc:
                logger.warning("live feed reader %s: %s; retrying", body.__name__, exc)
                await asyncio.sleep(1.0)
            except Exception:
                logger.exception("live feed reader %s failed; restarting", body.__name__)
                await asyncio.sleep(1.0)

    async def newest_id(self) -> str:
        newest = cast(list[Entry], await self.redis.xrevrange(FEED_STREAM, count=1))
        return newest[0][0] if newest else "0-0"

    # --- clients ---------------------------------------------------------------------

    def add(self, client: Client) -> None:
        self.clients.add(client)
        subscription = client.subscription
        subscription.index = (self._index, client)
        for kind in SUBSCRIPTION_KINDS:
            self._index.add(client, kind, getattr(subscription, kind))
        if subscription.all:
            self._index.everything.add(client)

    def remove(self, client: Client) -> None:
        self.clients.discard(client)
        self._index.drop(client)
        client.subscription.index = None

    # --- sessions --------------------------------------------------------------------

    def end_session(self, session_id: str) -> None:
        """Close the websockets opened through this browser session (logged out, its key
        removed, expired): 4001, the client must log in again."""
        for client in list(self.clients):
            if client.principal.session_id == session_id and not client.closing:
                client.close_soon(SESSION_ENDED, b"session ended")

    async def check_sessions(self) -> None:
        """End the sockets whose session is gone without an announcement reaching us
        (expired in Redis, or ended while the pub/sub reader was reconnecting)."""
        opened = {c.principal.session_id for c in self.clients if c.principal.session_id}
        if not opened or self.sessions is None:
            return
        alive = await self.sessions.alive(opened)
        for session_id in opened - alive:
            self.end_session(session_id)

    async def replay(self, client: Client, after: str) -> bool:
        """Send `client` what matched after `after`; False when that is out of the window."""
        client.holding = []
        sent_up_to = after
        try:
            oldest = cast(list[Entry], await self.redis.xrange(FEED_STREAM, count=1))
            if oldest and stream_id(after) < stream_id(oldest[0][0]):
                return False  # trimmed past the client's last id: events may be missing
            if stream_id(after) > stream_id(await self.newest_id()):
                return False  # newer than the stream: its end was lost (Redis failover)
            cursor = f"({after}"
            while True:
                entries = cast(
                    list[Entry],
                    await self.redis.xrange(FEED_STREAM, min=cursor, count=READ_COUNT),
                )
                for entry_id, fields in entries:
                    event = await self._decode(entry_id, fields)
                    if event is not None and client.wants(event):
                        client.enqueue(json.dumps(event))
                    sent_up_to = entry_id
                if len(entries) < READ_COUNT:
                    return True
                cursor = f"({entries[-1][0]}"
        finally:
            held, client.holding = client.holding or [], None
            for event_id, text in held:
                if event_id is None or stream_id(event_id) > stream_id(sent_up_to):
                    client.offer(text, event_id)

    # --- the stream ------------------------------------------------------------------

    async def _read_stream(self) -> None:
        if self.last_id is None:
            self.last_id = await self.newest_id()
        else:
            await self._check_history()
        while not self._stopping:
            reply = cast(
                list[tuple[str, list[Entry]]],
                await self.reader.xread(
                    {FEED_STREAM: self.last_id}, count=READ_COUNT, block=READ_BLOCK_MS
                ),
            )
            for _, entries in reply:
                for n, (entry_id, fields) in enumerate(entries, 1):
                    self.last_id = entry_id
                    if not self.clients and not self.task_watches:
                        continue  # nobody to send it to: not decoded (~20 us of a submission)
                    event = await self._decode(entry_id, fields)
                    if event is not None:
                        self.broadcast(event, entry_id)
                    if n % YIELD_EVERY == 0:
                        # Let the clients' writers drain between slices of a big batch.
                        await asyncio.sleep(0)

    async def _check_history(self) -> None:
        """Reconnected: when the stream now ends before what this reader last read, its
        end was lost (a replica promoted before it had those entries): every client is
        told to resync instead of waiting for events that will never come."""
        newest = await self.newest_id()
        assert self.last_id is not None
        if stream_id(newest) < stream_id(self.last_id):
            logger.warning(
                "live feed went back from %s to %s: clients resync", self.last_id, newest
            )
            text = json.dumps(message("resync", reason="feed history lost (Redis failover)"))
            for client in list(self.clients):
                client.offer(text)
            self.last_id = newest

    async def _decode(self, entry_id: str, fields: dict[str, str]) -> dict[str, Any] | None:
        try:
            event = json.loads(fields["event"])
        except (KeyError, ValueError):
            return None
        event["id"] = entry_id
        on_the_wire(event)
        event.setdefault("task_id", None)
        event.setdefault("state", None)
        task_id = event.get("task_id")
        if task_id and "owner" not in event:
            event["owner"] = await self._owner_of(task_id)
        return event

    async def _owner_of(self, task_id: str) -> str | None:
        if task_id not in self._owners:
            if len(self._owners) > OWNER_CACHE:
                self._owners.clear()
            owner = await self.redis.hget(task_key(task_id), "owner")
            self._owners[task_id] = cast(str | None, owner)  # decoded: see Entry
        return self._owners[task_id]

    def watch(self, watch: TaskWatch) -> None:
        self.task_watches.setdefault(watch.task_id, set()).add(watch)

    def unwatch(self, watch: TaskWatch) -> None:
        watches = self.task_watches.get(watch.task_id)
        if watches is not None:
            watches.discard(watch)
            if not watches:
                del self.task_watches[watch.task_id]

    def broadcast(self, event: dict[str, Any], event_id: str | None = None) -> None:
        if "seq" in event and (watches := self.task_watches.get(event["task_id"])):
            for watch in list(watches):
                watch.offer(event)
        text: str | None = None
        # Notifications go by owner to everyone; the rest to subscribers only.
        notification = event.get("type") == "notification"
        for client in list(self.clients) if notification else self._index.candidates(event):
            if client.wants(event):
                text = text or json.dumps(event)
                client.offer(text, event_id)

    # --- Celery events ---------------------------------------------------------------

    async def _read_pubsub(self) -> None:
        pubsub = self.reader.pubsub(ignore_subscribe_messages=True)
        try:
            # Only what the feed uses: every gateway would otherwise also decode every
            # task-sent, task-started, ... event of the platform.
            await pubsub.psubscribe(*(f"/{self.db}.celeryev/{t}" for t in CELERY_EVENT_TOPICS))
            await pubsub.subscribe(SESSION_ENDED_CHANNEL)
            # Sessions that ended while this reader was away.
            await self.check_sessions()
            while not self._stopping:
                msg = await pubsub.get_message(timeout=READ_BLOCK_MS / 1000)
                if msg and msg["type"] == "pmessage":
                    for event in decode_celery_events(msg["data"]):
                        self._on_celery_event(event)
                elif msg and msg["type"] == "message" and msg["channel"] == SESSION_ENDED_CHANNEL:
                    self.end_session(msg["data"])
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    def _on_celery_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type", "")
        hostname = event.get("hostname")
        if kind in ("worker-online", "worker-heartbeat") and hostname:
            known = hostname in self._workers
            now = time.time()
            self._workers[hostname] = now
            if not known:
                self._worker_message(hostname, "online", event)
            elif now - self._worker_pushed.get(hostname, 0) >= WORKER_PUSH_EVERY:
                # Live heartbeats and counts, not only online/offline (at most one a few
                # seconds per worker, however often it beats).
                self._worker_message(hostname, "online", event)
        elif kind == "worker-offline" and hostname:
            self._workers.pop(hostname, None)
            self._worker_message(hostname, "offline")
            # It consumes nothing more, though it stays registered until its process exits
            # (after its running tasks): from now on GET /workers and the coverage say gone.
            at = event.get("timestamp")
            self._spawn(self._mark_left(hostname, at if isinstance(at, float) else time.time()))
        elif kind == "task-received":
            task_id = event.get("uuid")
            # Not a state change (it may arrive after STARTED: pub/sub and the stream are
            # two channels): `state` is null, the task's state is the last `task` event's.
            # `received_by`, not `worker`: REST's `worker` is the one that ran the task.
            received = message(
                "received", task_id=task_id, state=None, received_by=hostname,
                name=event.get("name"), owner=self._owners.get(task_id or ""),
            )  # fmt: skip
            if received["owner"] is None and task_id:
                asyncio.get_running_loop().create_task(self._broadcast_received(received))
            else:
                self.broadcast(received)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _mark_left(self, hostname: str, at: float) -> None:
        try:
            await mark_left(self.redis, hostname, at)
        except (redis.exceptions.RedisError, OSError) as exc:
            logger.warning("could not mark worker %s as leaving: %s", hostname, exc)

    async def _broadcast_received(self, received: dict[str, Any]) -> None:
        received["owner"] = await self._owner_of(received["task_id"])
        self.broadcast(received)

    def _worker_message(
        self, hostname: str, state: str, event: dict[str, Any] | None = None
    ) -> None:
        self._worker_pushed[hostname] = time.time()
        counts = {k: event[k] for k in ("active", "processed") if event and k in event}
        self.broadcast(message("worker", state=state, hostname=hostname, **counts))

    # --- periodic --------------------------------------------------------------------

    async def _tick(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.stats_interval)
            await self.check_sessions()
            now = time.time()
            for hostname, seen in list(self._workers.items()):
                if now - seen > WORKER_TIMEOUT:
                    del self._workers[hostname]
                    self._worker_message(hostname, "offline")
            scopes = {None if c.principal.is_admin else c.principal.owner for c in self.clients}
            for scope in scopes:
                stats = await self.stats(scope)
                if scope is not None:
                    stats = {k: v for k, v in stats.items() if k not in OPERATOR_STATS}
                text = json.dumps(message("stats", stats=stats))
                for client in list(self.clients):
                    mine = None if client.principal.is_admin else client.principal.owner
                    if mine == scope:
                        client.offer(text)


# Worker status, task-received (alone, or batched by prefork workers into task.multi).
CELERY_EVENT_TOPICS = ("worker.*", "task.received", "task.multi")


def decode_celery_events(data: str | bytes) -> list[dict[str, Any]]:
    """Celery events from one pub/sub message: kombu's JSON envelope, base64 body.

    Prefork workers batch task events into one `task.multi` message holding a list.
    """
    try:
        envelope = json.loads(data)
        body = envelope["body"]
        if envelope.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        payload = json.loads(body)
    except (KeyError, TypeError, ValueError):
        return []
    events = payload if isinstance(payload, list) else [payload]
    return [e for e in events if isinstance(e, dict)]
