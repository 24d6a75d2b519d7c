"""Task messages built from templates of Celery's own, each template checked first.

Celery's `send_task` costs about 150 us per submission in the gateway (the protocol-2
headers, kombu's producer, the task-sent event): half of a submission's CPU. Messages of
one *shape* (task name, queue, priority, which options and headers are set) differ only
in the task's id, arguments, eta, time limits and header values, in the delivery tags,
and in the event's time and clock. So the first message of a shape is Celery's
(`send_task`, captured by `TaskPublisher`), kept as the shape's template; the next ones
are the template with those values put in.

Nothing about Celery's layout is taken on trust: the second message of a shape is built
both ways, and the shape is served from its template only if the two are the same
(delivery tags, the event's timestamp and clock aside). Otherwise the shape stays with
Celery, logged once. A Celery or kombu release that changes the layout is caught shape by
shape at run time; the cost is one extra build per shape.
"""

from __future__ import annotations

import base64
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from celery import Celery
from celery.utils.saferepr import saferepr
from celery.utils.time import utcoffset
from kombu.utils.json import dumps, loads

logger = logging.getLogger(__name__)

Commands = list[tuple[Any, ...]]
# What the shape of a message depends on: the task, its queue and priority, which of the
# eta and time limits are set, and the names of its headers, in order.
Shape = tuple[str, str | None, int | None, bool, bool, bool, tuple[str, ...]]


@dataclass
class Request:
    """One message to send: `TaskPublisher.publish`'s arguments, without countdown."""

    name: str
    task_id: str
    args: list[Any] | None
    kwargs: dict[str, Any] | None
    queue: str | None
    priority: int | None
    eta: datetime | None
    headers: dict[str, Any]
    time_limit: float | None
    soft_time_limit: float | None

    def shape(self) -> Shape:
        return (
            self.name, self.queue, self.priority, self.eta is None, self.time_limit is None,
            self.soft_time_limit is None, tuple(self.headers),
        )  # fmt: skip


@dataclass
class _Template:
    queue_list: str  # the LPUSH target
    message: dict[str, Any]
    embed: Any  # the body's third part (callbacks, errbacks, chain, chord)
    event_topic: str | None
    event: dict[str, Any] | None
    event_body: dict[str, Any] | None
    verified: bool = False


class MessageTemplates:
    """Builds the Redis commands of a task's message as `celery_build` would, from a
    template per shape once one is verified."""

    def __init__(self, celery: Celery, celery_build: Callable[[Request], Commands]) -> None:
        self._celery = celery
        self._celery_build = celery_build
        self._templates: dict[Shape, _Template] = {}
        self._refused: set[Shape] = set()
        self._argsrepr_max = celery.amqp.argsrepr_maxsize
        self._kwargsrepr_max = celery.amqp.kwargsrepr_maxsize
        self._repr_levels = celery.conf.task_repr_maxlevels
        self._clock = celery.clock  # type: ignore[attr-defined]  # the events' Lamport clock

    @property
    def verified(self) -> int:
        return sum(t.verified for t in self._templates.values())

    @property
    def refused(self) -> int:
        return len(self._refused)

    def build(self, request: Request) -> Commands:
        shape = request.shape()
        template = self._templates.get(shape)
        if template is not None and template.verified:
            return self._fill(template, request)
        commands = self._celery_build(request)
        if shape in self._refused:
            return commands
        if template is None:
            made = _template_of(commands)
            if made is None:
                self._refuse(shape, "not one message and its event")
            else:
                self._templates[shape] = made
            return commands
        ours = self._fill(template, request)
        difference = _difference(commands, ours)
        if difference:
            del self._templates[shape]
            self._refuse(shape, difference)
        else:
            template.verified = True
        return commands

    def _refuse(self, shape: Shape, why: str) -> None:
        self._refused.add(shape)
        logger.warning("messages of %s built by Celery each time: they differ in %s", shape[0], why)

    def _fill(self, template: _Template, request: Request) -> Commands:
        args = request.args or ()
        kwargs = request.kwargs or {}
        argsrepr = flat_saferepr(args, self._argsrepr_max, self._repr_levels)
        kwargsrepr = flat_saferepr(kwargs, self._kwargsrepr_max, self._repr_levels)
        eta = request.eta.isoformat() if request.eta is not None else None
        task_id = request.task_id
        headers = {
            **template.message["headers"], "id": task_id, "root_id": task_id, "eta": eta,
            "timelimit": [request.time_limit, request.soft_time_limit],
            "argsrepr": argsrepr, "kwargsrepr": kwargsrepr, **request.headers,
        }  # fmt: skip
        properties = {
            **template.message["properties"], "correlation_id": task_id,
            "delivery_tag": str(uuid.uuid4()),
        }  # fmt: skip
        body = _base64(dumps((args, kwargs, template.embed)))
        message = {**template.message, "body": body, "headers": headers, "properties": properties}
        commands: Commands = [("lpush", template.queue_list, dumps(message))]
        if template.event is not None and template.event_body is not None:
            event_body = {
                **template.event_body, "utcoffset": utcoffset(),
                "clock": self._clock.forward(), "uuid": task_id, "root_id": task_id,
                "args": argsrepr, "kwargs": kwargsrepr, "eta": eta, "timestamp": time.time(),
            }  # fmt: skip
            event = {
                **template.event, "body": _base64(dumps(event_body)),
                "properties": {**template.event["properties"], "delivery_tag": str(uuid.uuid4())},
            }  # fmt: skip
            commands.append(("publish", template.event_topic, dumps(event)))
        return commands


_SCALARS = (int, float, bool)
_EMPTY: dict[type, str] = {tuple: "()", list: "[]", dict: "{}"}


def _scalar(value: Any) -> str | None:
    """`saferepr`'s text of a str, number, bool or None (no truncation); None otherwise."""
    kind = type(value)
    if kind is str:
        return "'" + value.replace("'", "\\'") + "'"
    if kind in _SCALARS:
        return str(value)
    return "None" if value is None else None


def flat_saferepr(value: Any, maxlen: int | None, maxlevels: int) -> str:
    """Celery's `saferepr(value, maxlen, maxlevels)` (the message's argsrepr and
    kwargsrepr), written directly for what submissions carry: a tuple, list or dict (str
    keys) of strings, numbers, booleans and None, shorter than `maxlen`. Anything else
    (nesting, other types, a text that `saferepr` would cut) goes to `saferepr` itself.
    saferepr's token stream costs ~13 us for a two-field dict; this ~1 us
    (tests/service/test_message_templates.py compares the two)."""
    kind = type(value)
    if kind not in _EMPTY or maxlevels < 1:
        return saferepr(value, maxlen, maxlevels=maxlevels)
    if not value:
        return _EMPTY[kind]
    parts: list[str] = []
    if kind is dict:
        for key, item in value.items():
            text = _scalar(item)
            if type(key) is not str or text is None:
                return saferepr(value, maxlen, maxlevels=maxlevels)
            parts.append(_scalar(key) + ": " + text)  # type: ignore[operator]
        out = "{" + ", ".join(parts) + "}"
    else:
        for item in value:
            text = _scalar(item)
            if text is None:
                return saferepr(value, maxlen, maxlevels=maxlevels)
            parts.append(text)
        joined = ", ".join(parts)
        if kind is list:
            out = f"[{joined}]"
        else:
            out = f"({joined},)" if len(parts) == 1 else f"({joined})"
    if maxlen is not None and len(out) + 1 >= maxlen:
        return saferepr(value, maxlen, maxlevels=maxlevels)  # it may cut: its own rules
    return out


def _base64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _decoded(message: dict[str, Any]) -> Any:
    return loads(base64.b64decode(message["body"]))


def _template_of(commands: Commands) -> _Template | None:
    kinds = [c[0] for c in commands]
    if kinds not in (["lpush"], ["lpush", "publish"]):
        return None
    message = loads(commands[0][2])
    if message.get("properties", {}).get("body_encoding") != "base64":
        return None
    body = _decoded(message)
    event = loads(commands[1][2]) if len(commands) == 2 else None
    return _Template(
        queue_list=commands[0][1], message=message, embed=body[2],
        event_topic=commands[1][1] if event is not None else None, event=event,
        event_body=_decoded(event) if event is not None else None,
    )  # fmt: skip


def _difference(celery: Commands, ours: Commands) -> str:
    """Where Celery's commands and ours differ, beyond the delivery tags and the event's
    time and clock (made anew for every message); '' when nowhere. It names the fields,
    never their values: those hold the tenant's arguments."""
    if [c[0] for c in celery] != [c[0] for c in ours]:
        return f"commands {[c[0] for c in celery]} != {[c[0] for c in ours]}"
    if [c[1] for c in celery] != [c[1] for c in ours]:
        return "the list or topic a command goes to"
    for theirs, mine in zip(celery, ours, strict=True):
        a, b = loads(theirs[2]), loads(mine[2])
        a["properties"]["delivery_tag"] = b["properties"]["delivery_tag"]
        if theirs[0] == "publish":
            body_a, body_b = _decoded(a), _decoded(b)
            for moving in ("timestamp", "clock"):
                body_a[moving] = body_b[moving]
            if body_a != body_b:
                return f"task-sent event: {', '.join(_differing(body_a, body_b))}"
            a["body"] = b["body"]
        elif a["body"] != b["body"]:
            return "message body" if _decoded(a) != _decoded(b) else "message body's encoding"
        if dumps(a) != dumps(b):
            return f"message: {', '.join(_differing(a, b)) or 'the order of its fields'}"
    return ""


def _differing(a: Any, b: Any, path: str = "") -> list[str]:
    """The paths of the fields whose values differ between two decoded messages."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [
            found
            for key in dict.fromkeys([*a, *b])
            for found in _differing(a.get(key), b.get(key), f"{path}.{key}".lstrip("."))
        ]
    return [] if a == b else [path or "(the whole)"]
