"""The Celery application that workers, Beat and Flower load.

Start a worker with `celery -A workers.celery_app worker -E -Q <queues>`. The
configuration lives in `workers.runtime.celery_config`; importing this module reads the
settings (exiting with one line naming a bad one) and connects the worker's signal
receivers, which is why the gateway builds its own app with `create_celery_app`.
"""

from __future__ import annotations

import sys

from workers.core.settings import SettingsError, get_settings
from workers.runtime.celery_config import TASK_MODULES, create_celery_app

__all__ = ["TASK_MODULES", "celery_app", "create_celery_app"]

try:
    _settings = get_settings()
except SettingsError as exc:
    sys.exit(str(exc))

celery_app = create_celery_app(_settings)

# Worker lifecycle hooks (registry, Redis policy check) connect on import.
import workers.runtime.signals  # noqa: E402,F401
