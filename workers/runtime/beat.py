"""Beat's scheduler: RedBeat (schedule and lock in Redis), surviving Redis outages.

RedBeat's `tick` lets a connection error end the Beat process: a Redis restart or a
Sentinel failover stopped every scheduled job until something restarted Beat (under
`make run`, honcho then stops the whole platform). Here an outage is waited out, and a
lock that vanished with it (not yet replicated to the promoted replica, or expired
meanwhile) is taken again before anything is sent: blocking while another Beat holds
it, so one Beat sends at a time.

Relies on `RedBeatScheduler.tick` and its `lock` attribute (checked against
celery-redbeat 2.4.2, the locked version; setup.cfg allows 2.x).
"""

from __future__ import annotations

import logging
from typing import Any

import redis.exceptions
from redbeat import RedBeatScheduler  # type: ignore[import-untyped]

from workers.runtime.schedules import ZonedScheduleEntry

logger = logging.getLogger(__name__)

# Seconds between attempts while Redis cannot be reached.
OUTAGE_RETRY = 1.0


class ResilientRedBeatScheduler(RedBeatScheduler):
    # Owners' crontabs are read in their own time zone (`workers.runtime.schedules`).
    Entry = ZonedScheduleEntry

    def tick(self, *args: Any, **kwargs: Any) -> float:
        try:
            return float(super().tick(*args, **kwargs))
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            logger.warning("beat: Redis unreachable (%s); trying again", type(exc).__name__)
            return OUTAGE_RETRY
        except redis.exceptions.LockNotOwnedError:
            logger.warning("beat: the lock was lost with Redis; taking it again")
            self.lock.acquire()  # waits while another Beat holds it
            logger.info("beat: Acquired lock")
            return 0.0
