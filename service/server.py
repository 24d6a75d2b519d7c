"""Serving the gateway on $HOST:$PORT: one process, or WEB_CONCURRENCY processes.

One process (the default) is aiohttp's `run_app` on a uvloop event loop. Above one,
gunicorn's master (this process) binds the port and forks that many workers of aiohttp's
uvloop worker class, each with its own event loop, so the gateway uses more than one core.
The master replaces a worker that dies and, on SIGTERM, stops them all: each stops
accepting, closes its websockets with 1001 and finishes its requests within
SHUTDOWN_TIMEOUT, then the master exits 0.

With several processes, request metrics and the websocket count go to prometheus_client's
multiprocess files, in a directory the master creates and removes at exit, so `/metrics`
counts the requests of every worker whichever answers the scrape. prometheus_client picks
where values live when it is first imported: nothing may import it (nor `service.app`)
before the master has set PROMETHEUS_MULTIPROC_DIR, hence the imports inside functions.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from typing import Any

import uvloop
from aiohttp import web
from gunicorn import glogging
from gunicorn.app.base import BaseApplication

from workers.core.settings import Settings
from workers.core.telemetry import configure_tracing

logger = logging.getLogger("service")

SHUTDOWN_TIMEOUT = 10
# aiohttp's own default; gunicorn's (2 s) is shorter than load balancers' idle timeouts,
# which then reuse connections the gateway is closing.
KEEPALIVE_TIMEOUT = 75
WORKER_CLASS = "aiohttp.GunicornUVLoopWebWorker"
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT."""
    if settings.web_concurrency > 1:
        serve_processes(settings)
    else:
        serve_one(settings)


def serve_one(settings: Settings) -> None:
    from service.app import create_app

    configure_tracing("gateway")  # before the app is built: see workers.core.telemetry
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        access_log=None,
        print=lambda msg: logger.info(msg.strip()),
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        keepalive_timeout=KEEPALIVE_TIMEOUT,
        loop=uvloop.new_event_loop(),
    )


def serve_processes(settings: Settings) -> None:
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before its multiprocess directory")
    master = os.getpid()
    metrics_dir = tempfile.mkdtemp(prefix="claw-web-metrics-")
    os.environ[METRICS_DIR_VARIABLE] = metrics_dir
    try:
        GatewayProcesses(settings, metrics_dir).run()
    finally:
        # Workers leave gunicorn through this frame too (sys.exit after the fork).
        if os.getpid() == master:
            shutil.rmtree(metrics_dir, ignore_errors=True)


class GatewayLogger(glogging.Logger):
    """gunicorn's messages through the root handler of `configure_logging` (JSON in
    production, secrets redacted) instead of handlers of its own."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in list(log.handlers):
                log.removeHandler(handler)
        self.error_log.propagate = True


class GatewayProcesses(BaseApplication):
    """gunicorn configured from the settings alone: no config file, no command line."""

    def __init__(self, settings: Settings, metrics_dir: str) -> None:
        self.settings = settings
        self.metrics_dir = metrics_dir
        super().__init__()

    def load_config(self) -> None:
        host, port = self.settings.host, self.settings.port
        config = {
            "bind": [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"],
            "workers": self.settings.web_concurrency,
            "worker_class": WORKER_CLASS,
            # A worker gets this long to finish; aiohttp's worker uses 95% of it.
            "graceful_timeout": SHUTDOWN_TIMEOUT,
            "keepalive": KEEPALIVE_TIMEOUT,
            "accesslog": None,
            "loglevel": self.settings.log_level.lower(),
            "logger_class": GatewayLogger,
            # Its default path is per user: two gateways on one machine would share it.
            "control_socket_disable": True,
            "child_exit": self.child_exit,
        }
        for name, value in config.items():
            self.cfg.set(name, value)

    # gunicorn's stubs know WSGI and ASGI apps only; aiohttp's worker class (WORKER_CLASS)
    # loads an aiohttp Application.
    def load(self) -> web.Application:  # type: ignore[override]
        """In each worker, after the fork."""
        from service.app import create_app

        configure_tracing("gateway")  # the SDK's export thread belongs to this process
        return create_app(self.settings, metrics_dir=self.metrics_dir)

    def child_exit(self, arbiter: Any, worker: Any) -> None:
        """In the master: a dead worker's websockets no longer count."""
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid, self.metrics_dir)
