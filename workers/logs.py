"""Celery's logging set-up replaced by ours (`workers.logging_setup`) in every Celery process.

A receiver on `setup_logging` makes Celery skip its own handlers, so workers, their pool
processes and Beat log through the one redacting handler, at LOG_LEVEL.
"""

from __future__ import annotations

import sys
from typing import Any

from celery.signals import setup_logging

from workers.logging_setup import configure_logging
from workers.settings import get_settings

_COMMANDS = ("worker", "beat", "flower")


def process_type(argv: list[str]) -> str:
    """`worker`, `beat` or `flower` from a celery command line; `celery` otherwise."""
    return next((arg for arg in argv if arg in _COMMANDS), "celery")


@setup_logging.connect
def _on_setup_logging(**_: Any) -> None:
    configure_logging(get_settings(), process_type(sys.argv))
