"""Celery's logging set-up replaced by ours (`workers.core.logging_setup`) in every Celery process.

A receiver on `setup_logging` makes Celery skip its own handlers, so workers, their pool
processes and Beat log through the one redacting handler, at LOG_LEVEL.

Tenant content is never logged by default: Celery's INFO line for a finished task ends
with the task's return value (AI replies, knowledge passages), so ours stops at the
runtime. The result stays readable through the API, which checks the owner.
"""

from __future__ import annotations

import sys
from typing import Any

from celery.app import trace
from celery.signals import setup_logging

from workers.core.logging_setup import configure_logging
from workers.core.settings import get_settings

_COMMANDS = ("worker", "beat", "flower")
# Celery's `LOG_SUCCESS` without its `: %(return_value)s` tail.
SUCCESS_LINE = "Task %(name)s[%(id)s] succeeded in %(runtime)ss"


def process_type(argv: list[str]) -> str:
    """`worker`, `beat` or `flower` from a celery command line; `celery` otherwise."""
    return next((arg for arg in argv if arg in _COMMANDS), "celery")


@setup_logging.connect
def _on_setup_logging(**_: Any) -> None:
    configure_logging(get_settings(), process_type(sys.argv))
    # Read by the tracer on every success (a module global, not captured): pool processes
    # forked later inherit it.
    trace.LOG_SUCCESS = SUCCESS_LINE
