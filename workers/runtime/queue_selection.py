"""Which queues a worker consumes: `-Q` on its command line, else WORKER_QUEUES.

The Procfile and compose run one worker command; the environment of each process (a
Heroku app, a compose service) decides whether it serves AI, knowledge or every queue.
"""

from __future__ import annotations

import sys
from typing import Any

from celery.signals import celeryd_after_setup

from workers.core.settings import get_settings


def queues_given(argv: list[str]) -> bool:
    """Whether a celery command line chooses its queues itself (-Q / --queues)."""
    return any(arg in ("-Q", "--queues") or arg.startswith(("-Q", "--queues=")) for arg in argv)


@celeryd_after_setup.connect
def _select_queues(sender: Any = None, instance: Any = None, **_: Any) -> None:
    if instance is None or queues_given(sys.argv[1:]):
        return
    instance.app.amqp.queues.select(get_settings().worker_queues.split(","))
