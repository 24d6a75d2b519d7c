"""A no-op task on our Celery app, for our workers: `celery ... worker -I bench.tasks -Q bench`."""

from __future__ import annotations

import time

from bench.common import QUEUE
from workers.celery_app import celery_app

__all__ = ["QUEUE", "noop"]


@celery_app.task(name="bench.noop")
def noop() -> float:
    return time.time()
