"""Rate limits that hold for the whole platform, not per worker process.

Celery's `rate_limit` is enforced by each worker on its own, so four workers would send
four times the allowed calls to the model provider. Here every execution first takes a
slot in a sliding-window log in Redis (one Lua script, scripts/acquire_slot.lua, so
concurrent workers cannot both take the last slot). A task over the limit is re-published
with a countdown to when a slot frees up: it does not run, does not fail, and does not
hold a pool process while it waits. Such deferrals are counted per task and do not use up
its `max_retries`.

The ceiling is shared fairly between owners (the task's `claw_owner` header; tasks without
one share a single "unowned" bucket). An owner alone may use the whole ceiling; while other
owners are waiting for a slot, each may hold only an equal share of it (the limit divided
by the owners contending, rounded up). So one owner's flood cannot starve the others, and
no slot stays idle while only one owner wants it. An owner counts as waiting for two
windows after it was last refused: a refused task asks again only once a slot is due to
free, up to a window later, and must still count as waiting when it does.
"""

from __future__ import annotations

import random
import re
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from workers.core.headers import OWNER_HEADER
from workers.core.keys import deferrals_key, rate_limit_keys
from workers.core.lua import lua_file
from workers.core.settings import get_settings
from workers.runtime.base import BaseTaskWithRetry

DEFERRALS_TTL = 24 * 3600
_UNITS = {"s": 1, "m": 60, "h": 3600}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*\.?\d*)\s*([smh])\s*$")

UNOWNED = "@unowned"  # owners are percent-encoded in keys: no owner's name spells this


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


@dataclass(frozen=True)
class Refusal:
    """Why no slot was taken, and when to ask again."""

    wait: float  # seconds until a slot may be free
    share: int  # the owner's share it is over while others wait; 0: the ceiling is reached


def owner_segment(owner: str | None) -> str:
    return quote(owner, safe="") if owner else UNOWNED


class GlobalRateLimiter:
    """A sliding-window log per name in Redis, shared by every process, with a log per
    owner for its fair share."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._acquire = client.register_script(lua_file("workers.runtime", "acquire_slot"))

    def acquire(self, name: str, rate: Rate, owner: str | None = None) -> Refusal | None:
        """Take a slot for `owner`: None if taken, else why not and for how long."""
        keys, args = acquire_call(name, rate, owner, uuid.uuid4().hex)
        taken, wait_ms, share = self._acquire(keys=keys, args=args)
        if int(taken):
            return None
        return Refusal(max(int(wait_ms), 1) / 1000, int(share))


def acquire_call(
    name: str, rate: Rate, owner: str | None, member: str
) -> tuple[list[str], list[Any]]:
    """workers/runtime/scripts/acquire_slot.lua's KEYS and ARGV: the slot `member` of the
    limit `name` at `rate`, for `owner`."""
    segment = owner_segment(owner)
    keys = rate_limit_keys(name, segment)
    return keys, [rate.limit, int(rate.window * 1000), member, segment]


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
        task_id = self.request.id  # set whenever a worker runs the task (not called directly)
        if task_id and not self.request.called_directly and self.global_rate_setting:
            rate = parse_rate(getattr(get_settings(), self.global_rate_setting))
            owner = self.request.get(OWNER_HEADER)
            refusal = GlobalRateLimiter(self._redis()).acquire(self.name, rate, owner)
            if refusal:
                self._redis().incr(deferrals_key(task_id))
                self._redis().expire(deferrals_key(task_id), DEFERRALS_TTL)
                countdown = refusal.wait + random.uniform(0, self.defer_jitter)  # noqa: S311
                reached = (
                    f"this owner's share ({refusal.share}) of the platform rate limit {rate}, "
                    "while other owners wait,"
                    if refusal.share
                    else f"platform rate limit {rate}"
                )
                # A deferral is not a failure: it never counts against max_retries.
                raise super().retry(
                    exc=RateLimitedDeferral(f"{reached} reached; deferred {countdown:.2f}s"),
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
        from workers.runtime.clients import redis_client

        return redis_client()
