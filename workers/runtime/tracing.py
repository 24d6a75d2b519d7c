"""Tracing in a worker (`workers.core.telemetry`), when the `OTEL_*` variables ask for it.

Set up in the process that runs the tasks: each prefork pool process after its fork
(`worker_process_init`; the solo pool sends it too), or the worker itself with the
threads pool. Not in a prefork worker's main process: it runs no task, and its broker
polling would fill traces of its own. A pool process exits without running `atexit`, so
its buffered spans are exported on `worker_process_shutdown`.
"""

from __future__ import annotations

from typing import Any

from celery.concurrency.thread import TaskPool as ThreadTaskPool
from celery.signals import (
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)

from workers.core.telemetry import configure_tracing, shutdown_tracing


@worker_process_init.connect
def _trace_pool_process(**_: Any) -> None:
    configure_tracing("worker")


@worker_ready.connect
def _trace_thread_pool(sender: Any = None, **_: Any) -> None:
    if isinstance(getattr(sender, "pool", None), ThreadTaskPool):
        configure_tracing("worker")


@worker_process_shutdown.connect
def _flush_pool_process(**_: Any) -> None:
    shutdown_tracing()


@worker_shutdown.connect
def _flush_worker(**_: Any) -> None:
    shutdown_tracing()
