"""The start-up check of the Celery/kombu internals the platform relies on names each one
that is missing, and the gateway, a worker and Beat refuse to start without it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import celery
import celery._state
import celery.signals
import celery.worker.request
import celery.worker.state
import kombu
import pytest
from celery.backends.redis import RedisBackend
from celery.worker.consumer.consumer import Consumer
from celery.worker.request import Request
from kombu.asynchronous.hub import Hub
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual as kombu_virtual
from kombu.utils.json import dumps

import workers.runtime.internals
from tests.support.processes import ROOT, base_env
from workers.core.settings import Settings
from workers.runtime.internals import INTERNALS, InternalsError, check_internals

Channel = kombu_redis.Channel


def remove(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> None:
    """Take `name` away from a class (wherever in its bases it is defined) or a module."""
    classes = owner.__mro__ if isinstance(owner, type) else (owner,)
    for klass in classes:
        if name in vars(klass):
            monkeypatch.delattr(klass, name)


# kombu 5.6's `_put` and `_put_fanout`: they take the batch keyword in **kwargs and ignore it.
def put_without_batches(self: Any, queue: str, message: Any, **kwargs: Any) -> None:
    pri = self._get_message_priority(message, reverse=False)
    with self.conn_or_acquire() as client:
        client.lpush(self._q_for_pri(queue, pri), dumps(message))


def put_fanout_without_batches(self: Any, exchange: str, message: Any, routing_key: str, **_: Any):  # type: ignore[no-untyped-def]
    with self.conn_or_acquire() as client:
        client.publish(self._get_publish_topic(exchange, routing_key), dumps(message))


def put_ignoring_expiry(self: Any, queue: str, message: Any, **kwargs: Any) -> None:
    pri = self._get_message_priority(message, reverse=False)
    kwargs["_publish_batch"].add("lpush", self._q_for_pri(queue, pri), dumps(message))


@contextmanager
def one_client() -> Iterator[None]:
    yield None


def message_with_copied_headers(self: Any, body: Any, *args: Any, **kwargs: Any) -> Any:
    message = kombu_virtual.Channel.prepare_message(self, body, *args, **kwargs)
    return {**message, "headers": dict(message["headers"])}


def receivers_get_copied_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Celery's task sender as a release might write it: `before_task_publish` receivers
    get a copy of the headers, not the ones published."""
    send = celery.signals.before_task_publish.send

    def send_copy(*args: Any, **kwargs: Any) -> Any:
        return send(*args, **{**kwargs, "headers": dict(kwargs["headers"])})

    monkeypatch.setattr(celery.signals.before_task_publish, "send", send_copy)


# For each internal, a way to take it away (or change it as a release might).
BREAK: dict[str, Callable[[pytest.MonkeyPatch], None]] = {
    "Channel._put(_publish_batch=)": lambda mp: mp.setattr(Channel, "_put", put_without_batches),
    "Channel._put_fanout(_publish_batch=)": lambda mp: mp.setattr(
        Channel, "_put_fanout", put_fanout_without_batches
    ),
    "Channel.basic_publish(**kwargs)": lambda mp: mp.setattr(
        Channel, "basic_publish", lambda self, message, exchange, routing_key: None
    ),
    "Channel._expires": lambda mp: mp.setattr(Channel, "_put", put_ignoring_expiry),
    "Channel._get_message_priority(reverse=)": lambda mp: mp.setattr(
        Channel, "_get_message_priority", lambda self, message: 0
    ),
    "Channel._q_for_pri(queue, pri)": lambda mp: remove(mp, Channel, "_q_for_pri"),
    "Channel.conn_or_acquire(client=)": lambda mp: mp.setattr(
        Channel, "conn_or_acquire", lambda self: one_client()
    ),
    "Channel._create_client()": lambda mp: remove(mp, Channel, "_create_client"),
    "Channel.pool": lambda mp: remove(mp, Channel, "pool"),
    "Channel.prepare_message(headers=)": lambda mp: mp.setattr(
        Channel, "prepare_message", message_with_copied_headers
    ),
    "Channel.unacked_key": lambda mp: mp.setattr(Channel, "unacked_key", "unacked_v2"),
    "Channel.keyprefix_fanout": lambda mp: mp.setattr(Channel, "keyprefix_fanout", "/"),
    "AMQP.send_task_message": receivers_get_copied_headers,
    "RedisBackend._store_result": lambda mp: remove(mp, RedisBackend, "_store_result"),
    "Backend._get_result_meta": lambda mp: remove(mp, RedisBackend, "_get_result_meta"),
    "RedisBackend._MAX_STR_VALUE_SIZE": lambda mp: remove(mp, RedisBackend, "_MAX_STR_VALUE_SIZE"),
    "Request._request_dict": lambda mp: remove(mp, Request, "_request_dict"),
    "Request.time_limits": lambda mp: remove(mp, Request, "time_limits"),
    "Request.on_failure(exc_info, send_failed_event, return_ok)": lambda mp: mp.setattr(
        Request, "on_failure", lambda self, exc_info: None
    ),
    "Request._context": lambda mp: remove(mp, Request, "_context"),
    "celery.worker.request.task_ready": lambda mp: remove(mp, celery.worker.request, "task_ready"),
    "celery.worker.state.active_requests": lambda mp: remove(
        mp, celery.worker.state, "active_requests"
    ),
    "celery._state.get_current_task": lambda mp: remove(mp, celery._state, "get_current_task"),
    "Consumer.on_send_event_buffered": lambda mp: remove(mp, Consumer, "_flush_events"),
    "Hub.call_later(delay, callback, *args)": lambda mp: mp.setattr(
        Hub, "call_later", lambda self, callback: None
    ),
}
INSTALLED = f"kombu {kombu.__version__}, celery {celery.__version__}"


def test_the_installed_celery_and_kombu_pass_the_check() -> None:
    check_internals()


def test_every_internal_is_listed_in_the_module_docstring_and_taken_away_here() -> None:
    names = [internal.name for internal in INTERNALS]
    assert [name for name in names if f"`{name}`" not in workers.runtime.internals.__doc__] == []
    assert sorted(BREAK) == sorted(names)


@pytest.mark.parametrize("internal", INTERNALS, ids=lambda internal: internal.name)
def test_the_check_names_a_missing_internal_and_the_installed_versions(
    monkeypatch: pytest.MonkeyPatch, internal: workers.runtime.internals.Internal
) -> None:
    BREAK[internal.name](monkeypatch)
    with pytest.raises(InternalsError) as raised:
        check_internals()
    message = str(raised.value)
    assert f"{internal.package} {internal.name} is missing or changed" in message
    assert INSTALLED in message


@pytest.mark.parametrize(
    ("package", "version"),
    [(kombu, "5.6.2"), (kombu, "5.8.0"), (celery, "5.6.3"), (celery, "6.0.0")],
)
def test_an_untested_release_fails_the_check(
    monkeypatch: pytest.MonkeyPatch, package: Any, version: str
) -> None:
    monkeypatch.setattr(package, "__version__", version)
    with pytest.raises(InternalsError, match=f"{package.__name__} {version} is not the tested"):
        check_internals()


def test_the_gateway_refuses_to_start_without_an_internal(
    monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    from service.app import create_app

    BREAK["Channel._put(_publish_batch=)"](monkeypatch)
    with pytest.raises(InternalsError, match=r"kombu Channel\._put\(_publish_batch=\)"):
        create_app(Settings(redis_url=redis_url))


# Removes an internal that a worker and Beat do not need to start: without the check, they
# would run until the timeout.
BROKEN_START = """
import sys
import celery.backends.redis
del celery.backends.redis.RedisBackend._MAX_STR_VALUE_SIZE
sys.argv = ["celery", "-A", "workers.celery_app", *sys.argv[1:]]
from celery.__main__ import main
main()
"""


@pytest.mark.parametrize(
    "command",
    [
        ["worker", "-P", "solo", "--without-mingle", "--without-gossip"],
        ["beat", "--schedule", "{tmp}/beat-schedule"],
    ],
    ids=["worker", "beat"],
)
def test_a_worker_and_beat_refuse_to_start_without_an_internal(
    redis_url: str, tmp_path: Any, command: list[str]
) -> None:
    argv = [arg.format(tmp=tmp_path) for arg in command]
    proc = subprocess.run(
        [sys.executable, "-c", BROKEN_START, *argv], cwd=ROOT, env=base_env(redis_url),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1
    last_line = proc.stderr.strip().splitlines()[-1]
    assert last_line.startswith("Celery/kombu internals the platform relies on do not hold")
    assert f"with {INSTALLED}: celery RedisBackend._MAX_STR_VALUE_SIZE is missing" in last_line
