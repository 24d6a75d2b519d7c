"""Budgets per owner for AI tasks: tokens per minute and cost per day, checked when an AI
task is submitted; a submission over either answers 429 with `Retry-After` and the state.

What counts is what finished tasks used (the usage counters of `workers.ai.usage`): the
tokens of the owner's AI tasks finished in the last 60 seconds, and the cost of those
finished this UTC day. So a budget is an estimate that lags by the tasks still running:
a task already accepted always finishes (also one whose stream crosses the budget), and
tasks submitted together before any of them finished are all accepted.

Limits come from BUDGET_TOKENS_PER_MINUTE and BUDGET_COST_PER_DAY (0: unlimited) unless
the admin API set the owner's own (`claw:budget:<ns>`, `PUT /api/v1/budgets/{owner}`).
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import redis.asyncio

from service.errors import ApiError
from service.redis_pipe import RedisPipe
from workers.ai.usage import WINDOW, bucket_stamp, tokens_in_window
from workers.core.keys import budget_key, usage_cost_key, usage_recent_key
from workers.core.settings import Settings
from workers.taskindex.status import iso

LIMITS = ("tokens_per_minute", "cost_per_day")


class BudgetExceeded(ApiError):
    status = 429
    message = "budget exceeded"


async def budget_state(
    client: redis.asyncio.Redis, settings: Settings, owner: str, now: float | None = None
) -> dict[str, Any]:
    """The owner's limits (`source`: `owner` when the admin API set it, else `default`),
    what is used of each, when it resets, and which are exceeded."""
    now = time.time() if now is None else now
    moment = datetime.fromtimestamp(now, UTC)
    async with client.pipeline(transaction=False) as pipe:
        pipe.hgetall(budget_key(owner))
        pipe.zrangebyscore(usage_recent_key(owner), now - WINDOW, "+inf", withscores=True)
        pipe.get(usage_cost_key(owner, bucket_stamp("day", moment)))
        own, recent, cost = await pipe.execute()
    own = cast(dict[str, str], own)
    entries = tokens_in_window(recent)
    tokens = {
        "used": sum(n for _, n in entries),
        "resets_at": None,
        **_limit(own, "tokens_per_minute", settings.budget_tokens_per_minute, int),
    }
    if entries:
        tokens["resets_at"] = iso(_window_frees(entries, tokens["limit"]) + WINDOW)
    midnight = moment.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    spent = {
        "used": round(float(cost or 0.0), 8),
        "resets_at": midnight.isoformat(),
        **_limit(own, "cost_per_day", settings.budget_cost_per_day, float),
    }
    state: dict[str, Any] = {"owner": owner, "tokens_per_minute": tokens, "cost_per_day": spent}
    state["exceeded"] = [
        name
        for name in LIMITS
        if state[name]["limit"] and state[name]["used"] >= state[name]["limit"]
    ]
    return state


def _limit(own: dict[str, str], name: str, default: float, kind: type) -> dict[str, Any]:
    if name in own:
        return {"limit": kind(float(own[name])), "source": "owner"}
    return {"limit": kind(default), "source": "default"}


def _window_frees(entries: list[tuple[float, int]], limit: int) -> float:
    """When the window frees (minus WINDOW): the finish time of the task whose leaving
    brings the tokens under `limit`; under it already (or no limit), the oldest task's."""
    used = sum(n for _, n in entries)
    if not limit or used < limit:
        return entries[0][0]
    for finished, tokens in entries:
        used -= tokens
        if used < limit:
            return finished
    return entries[-1][0]


def retry_after(state: dict[str, Any], now: float | None = None) -> int:
    """Whole seconds until every exceeded limit has reset (at least 1)."""
    now = time.time() if now is None else now
    resets = [
        datetime.fromisoformat(state[name]["resets_at"]).timestamp() for name in state["exceeded"]
    ]
    return max(1, math.ceil(max(resets, default=now) - now))


async def check_budget(
    client: redis.asyncio.Redis, settings: Settings, owner: str, pipe: RedisPipe | None = None
) -> None:
    """Raise `BudgetExceeded` (429) when `owner` is over a budget."""
    if not (settings.budget_tokens_per_minute or settings.budget_cost_per_day):
        # No default limit: only a budget of the owner's own can apply. One EXISTS (on the
        # hot path's `pipe`) instead of reading the usage of every AI submission.
        key = budget_key(owner)
        if not await (pipe.execute("EXISTS", key) if pipe else client.exists(key)):
            return
    now = time.time()
    state = await budget_state(client, settings, owner, now)
    if state["exceeded"]:
        raise BudgetExceeded(
            f"budget exceeded: {', '.join(n.replace('_', ' ') for n in state['exceeded'])}",
            details={"budget": state},
            headers={"Retry-After": str(retry_after(state, now))},
        )


async def set_budget(
    client: redis.asyncio.Redis, owner: str, limits: dict[str, float | None]
) -> None:
    """Replace the owner's own limits: a limit None (or missing) is the default again."""
    values = {name: str(limits[name]) for name in LIMITS if limits.get(name) is not None}
    async with client.pipeline(transaction=True) as pipe:
        pipe.delete(budget_key(owner))
        for name, value in values.items():
            pipe.hset(budget_key(owner), name, value)
        await pipe.execute()


async def delete_budget(client: redis.asyncio.Redis, owner: str) -> None:
    await client.delete(budget_key(owner))
