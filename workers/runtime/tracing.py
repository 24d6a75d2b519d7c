"""Tracing in a worker (`workers.core.telemetry`), when the `OTEL_*` variables ask for it.

Set up in the process that runs the tasks: each prefork pool process after its fork
(`worker_process_init`; the solo pool sends it too), or the worker itself with another
pool; not in a prefork worker's main process, which runs no task. A pool process exits
without running `atexit`, so its buffered spans are exported on `worker_process_shutdown`.
"""

from __future__ import annotations

from typing import Any

from celery.concurrency.prefork import TaskPool as PreforkTaskPool
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
def _trace_worker_process(sender: Any = None, **_: Any) -> None:
    """Other pools than prefork (threads, gevent, eventlet) run tasks in this process."""
    if not isinstance(getattr(sender, "pool", None), PreforkTaskPool):
        configure_tracing("worker")


@worker_process_shutdown.connect
def _flush_pool_process(**_: Any) -> None:
    shutdown_tracing()


@worker_shutdown.connect
def _flush_worker(**_: Any) -> None:
    shutdown_tracing()
