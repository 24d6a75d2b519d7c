"""Rate limits that hold for the whole platform, not per worker process.

Celery's `rate_limit` is enforced by each worker on its own, so four workers would send
four times the allowed calls to the model provider. Here the `rate_limit` of every task on
the app (Celery's decorator option; the built-in tasks' come from settings) is enforced
for the whole platform, and Celery's per-worker limits are off. Every execution first
takes a slot in a sliding-window log in Redis (one Lua script, scripts/acquire_slot.lua,
so concurrent workers cannot both take the last slot). A delivery over the limit is
re-published with a countdown to when a slot frees up: it does not run, does not fail,
does not hold a pool process while it waits, and does not use up `max_retries`. The task
stays waiting (PENDING, or RETRY if it was retrying) with the reason and when it will run
in its record (`waiting_reason`, `eta`), and a `waiting` event in the live feed.

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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from workers.core.keys import rate_limit_keys
from workers.core.lua import lua_file
from workers.core.settings import get_settings

_UNITS = {"s": 1, "m": 60, "h": 3600}
# Celery's format: N (per second), N/s, N/m, N/h, N fractional; ours adds N/<seconds>s.
_RATE = re.compile(r"^\s*(\d*\.?\d+)\s*(?:/\s*(\d*\.?\d*)\s*([smh]))?\s*$")
DEFER_JITTER = 0.25

UNOWNED = "@unowned"  # owners are percent-encoded in keys: no owner's name spells this


@dataclass(frozen=True)
class Rate:
    limit: int
    window: float  # seconds

    def __str__(self) -> str:
        return f"{self.limit}/{self.window:g}s"


def parse_rate(text: str | float) -> Rate | None:
    """A task's `rate_limit` as Celery reads it, enforced over a sliding window:
    `"10/m"` -> 10 per 60 s, `"3/2s"` -> 3 per 2 s, `10` or `"10"` -> 10 per second,
    `"0.5/m"` -> 1 per 120 s; `0` -> None (no limit, as in Celery). Raises ValueError on
    anything else."""
    match = _RATE.match(str(text))
    if not match:
        raise ValueError(
            f"bad rate {text!r}: expected N, N/s, N/m, N/h or N/<seconds>s (Celery's rate_limit)"
        )
    count_text, amount, unit = match.groups()
    count = float(count_text)
    window = (float(amount) if amount else 1.0) * _UNITS[unit or "s"]
    if window <= 0:
        raise ValueError(f"bad rate {text!r}: the window must be positive")
    if count == 0:
        return None
    if count != int(count):  # a fractional rate: one run per 1/rate of the window
        return Rate(1, window / count)
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


@dataclass(frozen=True)
class Deferral:
    """A delivery that found no free slot: when to run it, and why (for the record)."""

    countdown: float
    reason: str


def declared_rate(task: Any) -> Rate | None:
    """The platform-wide rate of a task: the setting its `global_rate_setting` names (the
    built-in tasks: AI_RATE_LIMIT, VECTORIZE_RATE_LIMIT), else its own `rate_limit`
    (Celery's option on the decorator). None: unlimited. Raises ValueError for a rate
    Celery's format does not allow."""
    setting = getattr(task, "global_rate_setting", "")
    text = getattr(get_settings(), setting) if setting else getattr(task, "rate_limit", None)
    return parse_rate(text) if text not in (None, "") else None


def undeclarable_rates(tasks: Mapping[str, Any]) -> list[str]:
    """`name: problem` for every registered task whose rate cannot be enforced."""
    problems = []
    for name, task in sorted(tasks.items()):
        try:
            declared_rate(task)
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
    return problems


def take_slot(client: Any, task: Any, owner: str | None) -> Deferral | None:
    """Right before a delivery runs: take a slot of the task's platform-wide rate.
    None: run it (no rate, or a slot taken). A Deferral: put it back until a slot frees.

    Called in the pool process before the claim (`workers/runtime/backend.py`), so a
    deferred delivery never becomes STARTED: it stays waiting, in REST and in the feed.
    """
    rate = declared_rate(task)
    if rate is None:
        return None
    refusal = GlobalRateLimiter(client).acquire(task.name, rate, owner)
    if refusal is None:
        return None
    # Spread deferred tasks a little so they do not all wake at the same instant.
    countdown = refusal.wait + random.uniform(0, DEFER_JITTER)  # noqa: S311 - not crypto
    reached = (
        f"this owner's share ({refusal.share}) of the rate limit {rate}, while other owners wait,"
        if refusal.share
        else f"rate limit {rate}"
    )
    return Deferral(countdown, f"{reached} reached; runs in {countdown:.1f}s")
