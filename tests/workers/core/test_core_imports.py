"""The shared core and the gateway's imports have no side effects: no Redis connection,
no process exit, no Celery signal receivers (those belong to worker processes)."""

from __future__ import annotations

import subprocess
import sys

from tests.support.processes import ROOT

PROBE = """
import socket, sys
def refuse(*args, **kwargs):
    raise AssertionError("connected at import time")
socket.socket.connect = refuse
socket.create_connection = refuse
import workers.core.headers, workers.core.queues, workers.core.settings, workers.taskindex.record
import workers.runtime.clients, workers.runtime.celery_config
import service.app
loaded = sorted(m for m in ("workers.celery_app", "workers.runtime.signals") if m in sys.modules)
print("loaded:", loaded)
"""


def test_the_gateway_and_the_core_import_without_side_effects() -> None:
    # A bad setting too: importing must not read it, let alone exit on it.
    env = {"PATH": "/usr/bin:/bin", "PORT": "not-a-port", "REDIS_URL": "redis://192.0.2.1:1/0"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "loaded: []" in done.stdout


def test_the_gateway_app_connects_no_celery_signal_receivers() -> None:
    probe = (
        "from celery import signals\n"
        "from service.app import create_app\n"
        "from workers.core.settings import load_settings\n"
        "create_app(load_settings())\n"
        "hooks = [s for s in (signals.before_task_publish, signals.after_task_publish,"
        " signals.worker_ready, signals.celeryd_init) if s.receivers]\n"
        "print('receivers:', len(hooks))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "REDIS_URL": "redis://127.0.0.1:1/0"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "receivers: 0" in done.stdout
