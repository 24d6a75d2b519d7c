"""Publish a test task (tests/support/tasks.py) to a module's own database and queue, with
the platform's publisher (its record and event log included). It has no owner, so only an
admin key sees it through the API."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from celery import Celery
from celery.result import AsyncResult

Publish = Callable[[str, list[Any]], AsyncResult]


@contextmanager
def publisher(app: Celery, redis_url: str, queue: str) -> Iterator[Publish]:
    """`send(name, args)` publishes task `name` to `queue` on `redis_url`'s database; the
    connection is released on leaving."""
    connection = app.connection_for_write(redis_url)

    def send(name: str, args: list[Any]) -> AsyncResult:
        return app.send_task(name, args=args, queue=queue, connection=connection)

    try:
        yield send
    finally:
        connection.release()
