"""Plain Celery: default settings, the same Redis, its own queue. Never imports `workers`.

Worker: `celery -A bench.bare_app worker -Q bench_bare` (no -E: a bare worker sends no
events). Clients: `python -m bench.bare_client`. With BARE_EVENTS=1 (worker and client):
plain Celery as a monitored deployment runs it, with `track_started` and sent events
(start its worker with -E).
"""

from __future__ import annotations

import os
import time

from celery import Celery

QUEUE = "bench_bare"
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

bare_app = Celery("bare", broker=REDIS_URL, backend=REDIS_URL)
bare_app.conf.task_default_queue = QUEUE
if os.environ.get("BARE_EVENTS") == "1":
    bare_app.conf.task_track_started = True
    bare_app.conf.task_send_sent_event = True


@bare_app.task(name="bench.bare_noop")
def noop() -> float:
    return time.time()
