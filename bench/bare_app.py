"""Plain Celery: default settings, the same Redis, its own queue. Never imports `workers`.

Worker: `celery -A bench.bare_app worker -Q bench_bare` (no -E: a bare worker sends no
events). Clients: `python -m bench.bare_client`.
"""

from __future__ import annotations

import os
import time

from celery import Celery

QUEUE = "bench_bare"
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

bare_app = Celery("bare", broker=REDIS_URL, backend=REDIS_URL)
bare_app.conf.task_default_queue = QUEUE


@bare_app.task(name="bench.bare_noop")
def noop() -> float:
    return time.time()
