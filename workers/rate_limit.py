"""Rate limits that hold for the whole platform, not per worker process.

Celery's `rate_limit` is enforced by each worker on its own, so four workers would send
four times the allowed calls to the model provider. Here every execution first takes a
slot in a sliding-window log in Redis (one Lua script, so concurrent workers cannot both
take the last slot). A task over the limit is re-published with a countdown to when a
slot frees up: it does not run, does not fail, and does not hold a pool process while it
waits. Such deferrals are counted per task and do not use up its `max_retries`.
"""

from __future__ import annotations

import random
import re
import uuid
from dataclasses import dataclass
from typing import Any

from workers.base import BaseTaskWithRetry
from workers.settings import get_settings

PREFIX = "claw:ratelimit:"
DEFERRALS_TTL = 24 * 3600
_UNITS = {"s": 1, "m": 60, "h": 3600}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*\.?\d*)\s*([smh])\s*$")

# KEYS: the log. ARGV: limit, window (ms), member. Returns {1, 0} when a slot was taken,
# else {0, ms until the oldest entry leaves the window}. Redis' clock is the one clock.
ACQUIRE_LUA = """
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return {1, 0}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, tonumber(oldest[2]) + window - now}
"""


@dataclass(frozen=True)
class Rate:
    limit: int
    window: float  # seconds

    def __str__(self) -> str:
        return f"{self.limit}/{self.window:g}s"


def parse_rate(text: str) -> Rate:
    """`"10/m"`, `"5/h"`, `"3/2s"` -> Rate. Raises ValueError on anything else."""
    match = _RATE.match(text)
    if not match:
        raise ValueError(f"bad rate {text!r}: expected N/s, N/m, N/h or N/<seconds>s")
    count, amount, unit = match.groups()
    window = (float(amount) if amount else 1.0) * _UNITS[unit]
    if int(count) < 1 or window <= 0:
        raise ValueError(f"bad rate {text!r}: needs at least 1 per a positive window")
    return Rate(int(count), window)


class GlobalRateLimiter:
    """A sliding-window log per name in Redis, shared by every process."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._acquire = client.register_script(ACQUIRE_LUA)

    def acquire(self, name: str, rate: Rate) -> float:
        """Take a slot: 0.0 if taken, else the seconds until one may be free."""
        taken, wait_ms = self._acquire(
            keys=[f"{PREFIX}{name}"],
            args=[rate.limit, int(rate.window * 1000), uuid.uuid4().hex],
        )
        return 0.0 if int(taken) else max(int(wait_ms), 1) / 1000


def deferrals_key(task_id: str) -> str:
    return f"{PREFIX}deferrals:{task_id}"


class RateLimitedDeferral(Exception):
    """Why a task went back to its queue: the platform-wide limit was reached."""


class GloballyRateLimitedTask(BaseTaskWithRetry):
    """A task whose executions are limited across the cluster.

    `global_rate_setting` names the setting holding the rate (e.g. `ai_rate_limit`).
    """

    abstract = True
    global_rate_setting: str = ""
    # Spread deferred tasks a little so they do not all wake at the same instant.
    defer_jitter: float = 0.25

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.request.called_directly and self.global_rate_setting:
            rate = parse_rate(getattr(get_settings(), self.global_rate_setting))
            wait = GlobalRateLimiter(self._redis()).acquire(self.name, rate)
            if wait:
                self._redis().incr(deferrals_key(self.request.id))
                self._redis().expire(deferrals_key(self.request.id), DEFERRALS_TTL)
                countdown = wait + random.uniform(0, self.defer_jitter)  # noqa: S311
                # A deferral is not a failure: it never counts against max_retries.
                raise super().retry(
                    exc=RateLimitedDeferral(
                        f"platform rate limit {rate} reached; deferred {countdown:.2f}s"
                    ),
                    countdown=countdown,
                    max_retries=self.request.retries + 1,
                )
        return super().__call__(*args, **kwargs)

    def deferrals(self) -> int:
        if self.request.called_directly or not self.request.id:
            return 0
        return int(self._redis().get(deferrals_key(self.request.id)) or 0)

    def retry(self, *args: Any, max_retries: int | None = None, **kwargs: Any) -> Any:
        if max_retries is None and self.max_retries is not None:
            max_retries = self.max_retries + self.deferrals()
        return super().retry(*args, max_retries=max_retries, **kwargs)

    def failed_attempts(self) -> int:
        # Deferrals by the rate limiter are retries too, but not failures.
        return max(0, super().failed_attempts() - self.deferrals())

    @staticmethod
    def _redis() -> Any:
        from workers.signals import redis_client

        return redis_client()
