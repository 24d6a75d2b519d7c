"""Recovery of lost messages without a task a minute.

`recover_lost` (workers/runtime/recovery.py) used to run as a Beat task every minute:
60 task records an hour that buried users' tasks in the list, the counters and Flower,
almost always to find nothing. Each worker now runs this thread instead; a Redis lock lets
one of them check per interval, and the check costs a few index reads. The
`recover_lost_tasks` task stays, for an operator (or a test) to run it at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import redis

from workers.core.keys import PREFIX

logger = logging.getLogger(__name__)

LOCK_KEY = f"{PREFIX}recovery:lock"


class Housekeeper(threading.Thread):
    def __init__(self, client: Any, interval: float, recover: Callable[[], list[str]]) -> None:
        super().__init__(name="housekeeping", daemon=True)
        self.client = client
        self.interval = interval
        self.recover = recover
        self.stopping = threading.Event()

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                self.step()
            except (redis.exceptions.RedisError, OSError) as exc:
                logger.warning("housekeeping: %s", exc)
            except Exception:
                logger.exception("housekeeping failed")

    def step(self) -> list[str] | None:
        """Recover lost messages if no other worker did in this interval: the recovered
        task ids (None: another worker's turn)."""
        lock_ms = max(1, int(self.interval * 900))
        if not self.client.set(LOCK_KEY, "1", nx=True, px=lock_ms):
            return None
        recovered = self.recover()
        if recovered:
            logger.warning("recovered %d lost task message(s): %s", len(recovered), recovered)
        return recovered
