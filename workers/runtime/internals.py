"""Every private Celery and kombu API the platform relies on, and the check that it is there.

Flower gets by on Celery's public API. The platform needs five things Celery and kombu
offer no public hook for: the gateway sends a task's message and its index record in one
Redis script (kombu's publish batch), so does the transport for any other publisher (the
record reaches it in the message's headers), priority 9 runs first (kombu's priority lists),
every state a worker stores updates the index in the same Redis call (the result
backend's `_store_result`), and each delivery carries a claim token into the pool
process (the worker's `Request`). A Celery or kombu release may change any of these
without notice, so:

- setup.cfg pins celery and kombu to the tested minor release (`TESTED_RELEASES`), and the
  image installs the versions in requirements.lock;
- `check_internals()` runs when the gateway (`service.app.create_app`), a worker
  (`celeryd_init`) or Beat (`beat_init`) starts: outside the tested releases, or with an
  internal below missing or changed, it refuses to start, naming what is missing and the
  installed versions;
- tests/workers/runtime/test_internals.py takes each one away in turn and expects the check to
  name it.

Moving to a new release: re-check every entry below against its source, widen
`TESTED_RELEASES` and the pins in setup.cfg, `make lock`, run the suite.

Relied on (what; where; checked against):

kombu's Redis transport (`kombu.transport.redis.Channel`, `kombu.transport.virtual`):

- `Channel._put(_publish_batch=)`: given a publish batch, `_put(queue, message,
  _publish_batch=batch)` hands its LPUSH (and the PEXPIREs of an expiring queue) to
  `batch.add(command, *args)` instead of running them. `PublishCapture` below
  (service/publisher.py); `_HighestFirst._put` (workers/runtime/priority.py) leaves batched
  publishes to kombu. kombu 5.7.0; kombu 5.6.2 ignores the keyword and runs the LPUSH
  itself, blocking the gateway's event loop.
- `Channel._put_fanout(_publish_batch=)`: the same for a fanout message (the PUBLISH of
  the task-sent event). `PublishCapture`. kombu 5.7.0.
- `Channel.basic_publish(**kwargs)`: `basic_publish` and the direct and fanout exchange
  types' `deliver` pass extra keywords on to `_put` and `_put_fanout`. `PublishCapture`
  adds the batch there. kombu 5.7.0.
- `Channel._expires`: the queues declared with an expiry (`x-expires`), which `_put`
  refreshes on each publish. `_HighestFirst._put` leaves those queues to kombu.
  kombu 5.7.0.
- `Channel._get_message_priority(reverse=)`: a message's priority step. Overridden by
  `_HighestFirst` to invert it (9 runs first). kombu 5.7.0.
- `Channel._q_for_pri(queue, pri)`: the list holding a priority step: `queue` for 0,
  `queue<sep>N` above. `_HighestFirst._put`; workers/runtime/queue_depth.py builds the same names.
  kombu 5.7.0.
- `Channel.conn_or_acquire(client=)`: the client every blocking command of the channel
  runs on. Overridden by `_HighestFirst` (one client per connection pool). kombu 5.7.0.
- `Channel._create_client()` and `Channel.pool`: a client on the channel's connection
  pool. `_HighestFirst._shared_client`. kombu 5.7.0.
- `Channel.prepare_message(headers=)`: the message a channel's `_put` gets holds, as
  `message["headers"]`, the very dict given to `Producer.publish` (no copy).
  `_HighestFirst._put` takes a task's record out of it once written, so the
  `after_task_publish` receiver (workers/runtime/signals.py) finds nothing left to write.
  kombu 5.7.0. Were it a copy, the receiver would write the record a second time.
- `Channel.unacked_key`: messages being worked on, in the hash `unacked` (delivery tag ->
  `[message, exchange, routing key]`) and the sorted set `unacked_index`.
  workers/runtime/recovery.py reads both. kombu 5.7.0.
- `Channel.keyprefix_fanout`: a fanout message goes to the pub/sub topic
  `/{db}.<exchange>/<routing key>`. service/feed.py subscribes to `/{db}.celeryev/<event>`.
  kombu 5.7.0.

Celery:

- `AMQP.send_task_message`: hands one headers dict to the `before_task_publish`
  receivers, to `Producer.publish` and to the `after_task_publish` receivers (Celery's
  signal documentation says receivers may change the headers, not that the changes reach
  the message). workers/runtime/signals.py puts a new task's record there for the
  transport to write with the message. celery 5.7.0. Were it copies, the record would
  reach the transport no more and the `after_task_publish` receiver would write it after
  the message, as it does with another transport.
- `RedisBackend._store_result`: `_store_result(task_id, result, state, traceback=None,
  request=None, **kwargs)`, which `store_result` calls for every state a worker stores.
  Overridden by `_IndexedMixin` (workers/runtime/backend.py). celery 5.7.0.
- `Backend._get_result_meta`: the stored meta of a state, `_get_result_meta(result,
  state, traceback, request)`. `_IndexedMixin._store_result`. celery 5.7.0.
- `RedisBackend._MAX_STR_VALUE_SIZE`: the largest value Redis stores.
  `_IndexedMixin._store_result`. celery 5.7.0.
- `Request._request_dict`: what `celery.worker.request.Request` hands to the pool
  process; its keys become attributes of `task.request` and of the request the backend
  gets. `ClawRequest.__init__` (workers/runtime/base.py) adds the claim token;
  `_IndexedMixin._store_result` reads it. celery 5.7.0.
- `Request.time_limits`: a delivery's (hard, soft) time limits. `ClawRequest.__init__`
  keeps the soft one below the hard one. celery 5.7.0.
- `Request.on_failure(exc_info, send_failed_event, return_ok)`, `Request._context` and
  `celery.worker.request.task_ready`: `ClawRequest.on_failure` fails a poison task itself.
  celery 5.7.0.
- `celery.worker.state.active_requests`: the requests a worker is running.
  workers/runtime/signals.py refreshes their claims at each heartbeat. celery 5.7.0.
- `celery._state.get_current_task`: the running task, without importing Celery in the
  gateway. workers/core/logging_setup.py. celery 5.7.0.
- `Consumer.on_send_event_buffered`: what a worker's event dispatcher calls when it
  buffers a task event (the Events bootstep passes it as `on_send_buffered`), and
  `Consumer._flush_events`, which publishes the buffer. workers/runtime/task_events.py
  replaces the first (flush on the loop's next turn) by a flush an interval later.
  celery 5.7.0.
- `Hub.call_later(delay, callback, *args)`: a timer on the worker's event loop (kombu's
  hub). workers/runtime/task_events.py. kombu 5.7.0.

Not checked here, because it checks itself: the gateway builds a shape of task message
from a template of Celery's own only after the two agreed on a message of that shape
(service/message_templates.py); a layout that changed keeps that shape with Celery.

Subclasses that override private methods (each stays with the concept it serves):
`_HighestFirst` in workers/runtime/priority.py (`PriorityChannel`, `PrioritySentinelChannel`:
`_get_message_priority`, `_put`, `conn_or_acquire`), `_IndexedMixin` in workers/runtime/backend.py
(`IndexedRedisBackend`, `IndexedSentinelBackend`: `_store_result`), `ClawRequest` in
workers/runtime/base.py (`__init__`, `on_failure`). The patches of live objects are
`PublishCapture`, below, and `Consumer.on_send_event_buffered` (workers/runtime/task_events.py).
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from workers.core.headers import INDEXED_HEADER

# The minor releases every entry above was checked against: (major, minor) per package.
TESTED_RELEASES = {"kombu": (5, 7), "celery": (5, 7)}
# kombu's private keyword for a publish batch (see `Channel._put(_publish_batch=)`).
PUBLISH_BATCH = "_publish_batch"


class InternalsError(RuntimeError):
    """Celery or kombu lacks an internal the platform relies on."""


class PublishCapture:
    """Keeps the Redis commands a kombu Redis channel would run to deliver a message.

    Patches `channel.basic_publish` to pass the capture as kombu's publish batch: inside
    `capturing()`, kombu hands each final command (`add(command, *args)`) here instead of
    running it; outside, the channel publishes as usual.
    """

    def __init__(self, channel: Any, allowed: Collection[str]) -> None:
        self._allowed = frozenset(allowed)
        self._commands: list[tuple[Any, ...]] | None = None
        deliver = channel.basic_publish

        def basic_publish(message: Any, **kwargs: Any) -> Any:
            batch = self if self._commands is not None else None
            return deliver(message, **{PUBLISH_BATCH: batch}, **kwargs)

        channel.basic_publish = basic_publish

    @contextmanager
    def capturing(self) -> Iterator[list[tuple[Any, ...]]]:
        """The commands of every message published in the block, in order."""
        commands: list[tuple[Any, ...]] = []
        self._commands = commands
        try:
            yield commands
        finally:
            self._commands = None

    def add(self, name: str, *args: Any) -> None:
        """kombu's publish-batch protocol: one final Redis command."""
        if name not in self._allowed:
            raise RuntimeError(f"unexpected publish command from kombu: {name}")
        assert self._commands is not None  # kombu only gets the batch while capturing
        self._commands.append((name, *args))


@dataclass(frozen=True)
class Internal:
    name: str  # as the module docstring and the start-up error name it
    package: str
    probe: Callable[[], str | None]  # what is wrong, or None


def check_internals() -> None:
    """Raise `InternalsError` unless the installed Celery and kombu are tested releases
    with every internal the platform relies on. No I/O: nothing connects to Redis."""
    problems = []
    versions = {package: _version(package) for package in TESTED_RELEASES}
    for package, (major, minor) in TESTED_RELEASES.items():
        if _release(versions[package]) != (major, minor):
            problems.append(f"{package} {versions[package]} is not the tested {major}.{minor}.x")
    for internal in INTERNALS:
        try:
            wrong = internal.probe()
        except Exception as exc:  # whatever breaks a probe: the internal is gone or changed
            wrong = f"{type(exc).__name__}: {exc}"
        if wrong:
            problems.append(f"{internal.package} {internal.name} is missing or changed ({wrong})")
    if problems:
        installed = ", ".join(f"{package} {version}" for package, version in versions.items())
        raise InternalsError(
            f"Celery/kombu internals the platform relies on do not hold with {installed}: "
            + "; ".join(problems)
            + " (see workers/runtime/internals.py)"
        )


def exit_unless_internals_hold(**_: Any) -> None:
    """Celery signal receiver (`celeryd_init`, `beat_init`): a worker or Beat refuses to
    start with the check's message. Celery logs and ignores exceptions raised by signal
    receivers, all but SystemExit."""
    try:
        check_internals()
    except InternalsError as exc:
        raise SystemExit(str(exc)) from None


def _version(package: str) -> str:
    return str(importlib.import_module(package).__version__)


def _release(version: str) -> tuple[int, ...]:
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match[1]), int(match[2])) if match else ()


# Probes: each returns what is wrong, or None. They look everything up when called.


def _kombu_channel() -> Any:
    return importlib.import_module("kombu.transport.redis").Channel


def _has(owner: Any, attribute: str) -> str | None:
    return None if hasattr(owner, attribute) else f"no attribute {attribute}"


def _accepts(function: Any, *names: str, var_keyword: bool = False) -> str | None:
    """None when `function` takes each of `names` (and **kwargs, with `var_keyword`)."""
    parameters = inspect.signature(function).parameters
    missing = [name for name in names if name not in parameters]
    if var_keyword and not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        missing.append("**kwargs")
    return f"does not accept {', '.join(missing)}" if missing else None


class _NoRedis:
    """A channel's client that refuses every command: a probe must not reach Redis."""

    def __enter__(self) -> Any:
        raise RuntimeError("ran a Redis command itself instead of adding it to the batch")

    def __exit__(self, *exc: object) -> None:
        return None


def _detached_channel(expires: dict[str, int] | None = None) -> Any:
    """A kombu Redis channel without a connection, enough to route one message."""
    channel_class = _kombu_channel()
    channel = channel_class.__new__(channel_class)
    channel._expires = expires or {}
    channel.sep = ":"
    channel.priority_steps = list(range(10))
    channel.conn_or_acquire = lambda client=None: _NoRedis()
    return channel


class _Batch:
    def __init__(self) -> None:
        self.commands: list[str] = []

    def add(self, name: str, *args: Any) -> None:
        self.commands.append(name)


_MESSAGE = {"body": "", "properties": {"priority": 0}, "headers": {}}


def _probe_put_batch() -> str | None:
    batch = _Batch()
    _kombu_channel()._put(_detached_channel(), "q", _MESSAGE, **{PUBLISH_BATCH: batch})
    return None if batch.commands == ["lpush"] else f"batch got {batch.commands}"


def _probe_put_fanout_batch() -> str | None:
    batch = _Batch()
    channel = _detached_channel()
    _kombu_channel()._put_fanout(channel, "ex", _MESSAGE, "rk", **{PUBLISH_BATCH: batch})
    return None if batch.commands == ["publish"] else f"batch got {batch.commands}"


def _probe_publish_keywords() -> str | None:
    exchange = importlib.import_module("kombu.transport.virtual.exchange")
    for function in (
        _kombu_channel().basic_publish,
        exchange.DirectExchange.deliver,
        exchange.FanoutExchange.deliver,
    ):
        if _accepts(function, var_keyword=True):
            return f"{function.__qualname__} does not pass on keywords"
    return None


def _probe_expires() -> str | None:
    # `_put` refreshes an expiring queue's lists: it reads `_expires` to know which.
    batch = _Batch()
    channel = _detached_channel(expires={"q": 1000})
    _kombu_channel()._put(channel, "q", _MESSAGE, **{PUBLISH_BATCH: batch})
    return None if "pexpire" in batch.commands else "_put does not read it"


def _probe_priority_lists() -> str | None:
    names = [_kombu_channel()._q_for_pri(_detached_channel(), "q", step) for step in (0, 7)]
    return None if names == ["q", "q:7"] else f"lists named {names}, not q, q:7"


def _probe_fanout_topic() -> str | None:
    channel_class = _kombu_channel()
    if channel_class.keyprefix_fanout != "/{db}.":
        return f"prefix {channel_class.keyprefix_fanout!r}, not '/{{db}}.'"
    topic = channel_class._get_publish_topic(_detached_channel(), "celeryev", "task.sent")
    return None if topic == "/{db}.celeryev/task.sent" else f"topic {topic!r}"


def _probe_unacked() -> str | None:
    channel_class = _kombu_channel()
    keys = (
        getattr(channel_class, "unacked_key", None),
        getattr(channel_class, "unacked_index_key", None),
    )
    return None if keys == ("unacked", "unacked_index") else f"keys {keys}"


class _RecordingChannel:
    """Enough of a channel for `Producer.publish`: keeps the message it gets."""

    message: Any = None

    def prepare_message(self, body: Any, *args: Any, **kwargs: Any) -> Any:
        return _kombu_channel().prepare_message(_detached_channel(), body, *args, **kwargs)

    def basic_publish(self, message: Any, **kwargs: Any) -> None:
        self.message = message


def _probe_message_headers() -> str | None:
    channel = _RecordingChannel()
    headers = {"probe": "1"}
    producer = importlib.import_module("kombu").Producer(channel, auto_declare=False)
    producer.publish("", routing_key="q", headers=headers, serializer="json")
    return None if channel.message["headers"] is headers else "the message holds a copy"


def _probe_publish_signal_headers() -> str | None:
    celery = importlib.import_module("celery")
    signals = importlib.import_module("celery.signals")
    sender = "claw.internals-probe"
    seen: dict[str, Any] = {}

    def before(headers: Any = None, **_: Any) -> None:
        seen["before_task_publish"] = headers

    def after(headers: Any = None, **_: Any) -> None:
        seen["after_task_publish"] = headers

    class Producer:
        def publish(self, body: Any, headers: Any = None, **_: Any) -> None:
            seen["Producer.publish"] = headers

    app = celery.Celery("probe", set_as_current=False)
    message = app.amqp.as_task_v2("probe", sender)
    signals.before_task_publish.connect(before, sender=sender, weak=False)
    signals.after_task_publish.connect(after, sender=sender, weak=False)
    try:
        # Written already, as far as the platform's own receivers are concerned.
        app.amqp.send_task_message(
            Producer(), sender, message, queue="celery", retry=False, headers={INDEXED_HEADER: "1"}
        )
    finally:
        signals.before_task_publish.disconnect(before, sender=sender)
        signals.after_task_publish.disconnect(after, sender=sender)
        app.close()
    parties = ("before_task_publish", "Producer.publish", "after_task_publish")
    if len({id(seen.get(name)) for name in parties}) == 1 and seen.get(parties[0]) is not None:
        return None
    return "the publish signals and the producer get different headers"


def _redis_backend() -> Any:
    return importlib.import_module("celery.backends.redis").RedisBackend


def _probe_store_result() -> str | None:
    backend = _redis_backend()
    wrong = _accepts(backend._store_result, "task_id", "result", "state", "traceback", "request")
    if wrong:
        return wrong
    # Every state write goes through it only while `store_result` calls it.
    calls = backend.store_result.__code__.co_names
    return None if "_store_result" in calls else "store_result does not call it"


def _worker_request() -> Any:
    return importlib.import_module("celery.worker.request").Request


def _probe_event_buffering() -> str | None:
    consumer = importlib.import_module("celery.worker.consumer.consumer").Consumer
    missing = _has(consumer, "on_send_event_buffered") or _has(consumer, "_flush_events")
    if missing:
        return missing
    events = importlib.import_module("celery.worker.consumer.events").Events
    if "on_send_buffered=c.on_send_event_buffered" not in inspect.getsource(events.start):
        return "the worker's event dispatcher no longer calls Consumer.on_send_event_buffered"
    return None


INTERNALS: tuple[Internal, ...] = (
    Internal("Channel._put(_publish_batch=)", "kombu", _probe_put_batch),
    Internal("Channel._put_fanout(_publish_batch=)", "kombu", _probe_put_fanout_batch),
    Internal("Channel.basic_publish(**kwargs)", "kombu", _probe_publish_keywords),
    Internal("Channel._expires", "kombu", _probe_expires),
    Internal(
        "Channel._get_message_priority(reverse=)",
        "kombu",
        lambda: _accepts(_kombu_channel()._get_message_priority, "message", "reverse"),
    ),
    Internal("Channel._q_for_pri(queue, pri)", "kombu", _probe_priority_lists),
    Internal(
        "Channel.conn_or_acquire(client=)",
        "kombu",
        lambda: _accepts(_kombu_channel().conn_or_acquire, "client"),
    ),
    Internal("Channel._create_client()", "kombu", lambda: _has(_kombu_channel(), "_create_client")),
    Internal("Channel.pool", "kombu", lambda: _has(_kombu_channel(), "pool")),
    Internal("Channel.prepare_message(headers=)", "kombu", _probe_message_headers),
    Internal("Channel.unacked_key", "kombu", _probe_unacked),
    Internal("Channel.keyprefix_fanout", "kombu", _probe_fanout_topic),
    Internal("AMQP.send_task_message", "celery", _probe_publish_signal_headers),
    Internal("RedisBackend._store_result", "celery", _probe_store_result),
    Internal(
        "Backend._get_result_meta",
        "celery",
        lambda: _accepts(
            _redis_backend()._get_result_meta, "result", "state", "traceback", "request"
        ),
    ),
    Internal(
        "RedisBackend._MAX_STR_VALUE_SIZE",
        "celery",
        lambda: _has(_redis_backend(), "_MAX_STR_VALUE_SIZE"),
    ),
    Internal("Request._request_dict", "celery", lambda: _has(_worker_request(), "_request_dict")),
    Internal("Request.time_limits", "celery", lambda: _has(_worker_request(), "time_limits")),
    Internal(
        "Request.on_failure(exc_info, send_failed_event, return_ok)",
        "celery",
        lambda: _accepts(
            _worker_request().on_failure, "exc_info", "send_failed_event", "return_ok"
        ),
    ),
    Internal("Request._context", "celery", lambda: _has(_worker_request(), "_context")),
    Internal(
        "celery.worker.request.task_ready",
        "celery",
        lambda: _has(importlib.import_module("celery.worker.request"), "task_ready"),
    ),
    Internal(
        "celery.worker.state.active_requests",
        "celery",
        lambda: _has(importlib.import_module("celery.worker.state"), "active_requests"),
    ),
    Internal(
        "celery._state.get_current_task",
        "celery",
        lambda: _has(importlib.import_module("celery._state"), "get_current_task"),
    ),
    Internal("Consumer.on_send_event_buffered", "celery", _probe_event_buffering),
    Internal(
        "Hub.call_later(delay, callback, *args)",
        "kombu",
        lambda: _accepts(
            importlib.import_module("kombu.asynchronous.hub").Hub.call_later, "delay", "callback"
        ),
    ),
)
