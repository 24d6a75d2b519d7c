"""Beat's scheduler: RedBeat (schedule and lock in Redis), surviving Redis outages.

RedBeat's `tick` lets a connection error end the Beat process: a Redis restart or a
Sentinel failover stopped every scheduled job until something restarted Beat (under
`make run`, honcho then stops the whole platform). Here an outage is waited out, and a
lock that vanished with it (not yet replicated to the promoted replica, or expired
meanwhile) is taken again before anything is sent: blocking while another Beat holds
it, so one Beat sends at a time.

An owner's schedule (`workers.runtime.schedules`) is sent as its owner's submission would
be, within the owner's AI budget: a firing of `generate_ai_response` while its owner is
over budget (`workers.ai.budgets`) is not sent. It still takes its slot (the schedule is
due again at its next time, and stays), and the schedule says so: each firing of an
owner's schedule is noted on it (`record_firing`: the task sent, or skipped with the
budget's state). The operators' entries (`beat_schedule`) are sent as Celery sends them.

Relies on `RedBeatScheduler.tick` and its `lock` attribute, and on Celery's
`Scheduler.apply_async(entry, producer, advance)` and `reserve` (checked against
celery-redbeat 2.4.2 and Celery 5, the locked versions; setup.cfg allows 2.x).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis.exceptions
from redbeat import RedBeatScheduler  # type: ignore[import-untyped]
from redbeat.schedulers import get_redis  # type: ignore[import-untyped]

from workers.ai.budgets import exceeded_names, over_budget
from workers.core import queues
from workers.core.headers import OWNER_HEADER, SCHEDULE_HEADER
from workers.core.settings import get_settings
from workers.runtime.clients import redis_client
from workers.runtime.schedules import (
    ZonedScheduleEntry,
    record_firing,
    sent_firing,
    skipped_firing,
)

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

    def apply_async(
        self, entry: Any, producer: Any = None, advance: bool = True, **kwargs: Any
    ) -> Any:
        """Send a due entry as Celery's Beat does, except an owner's AI firing while the
        owner is over budget: that one takes its slot and sends nothing. What an owner's
        firing did is noted on its schedule. A budget that cannot be read raises (Beat
        logs it): the entry keeps its slot and is tried again at the next tick."""
        headers = (entry.options or {}).get("headers") or {}
        if not headers.get(SCHEDULE_HEADER):  # the operators' entries
            return super().apply_async(entry, producer, advance, **kwargs)
        owner = headers.get(OWNER_HEADER)
        over = None
        if owner and queues.canonical_name(entry.task) == queues.GENERATE_AI_RESPONSE:
            over = over_budget(redis_client(), get_settings(), owner)
        if over is not None:
            if advance:
                entry = self.reserve(entry)
            logger.warning(
                "beat: %s not sent: its owner %s is over budget (%s)",
                entry.name, owner, exceeded_names(over),
            )  # fmt: skip
            self._note(entry, skipped_firing(over, time.time()))
            return None
        result = super().apply_async(entry, producer, advance, **kwargs)
        self._note(entry, sent_firing(getattr(result, "id", None), time.time()))
        return result

    def _note(self, entry: Any, firing: dict[str, Any]) -> None:
        """What a firing did, on its schedule; not noted is only logged (it was sent, or
        skipped, already)."""
        try:
            record_firing(get_redis(self.app), entry.key, firing)
        except redis.exceptions.RedisError as exc:
            logger.warning("beat: firing of %s not noted on it: %r", entry.name, exc)
