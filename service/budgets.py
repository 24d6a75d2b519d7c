"""Budgets per owner for AI tasks, the gateway's side: checked when AI work is submitted
(`/ai/generate`, an AI item of a batch, a retry of an AI task); a submission over either
budget answers 429 with `Retry-After` and the state.

What a budget is, and how its state is computed, is `workers.ai.budgets` (also checked
there by Beat's firings of owners' schedules and by bulk retries): here the same reads
with the asyncio client, handed to its `state_of`.
"""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio

from service.errors import ApiError
from service.redis_pipe import RedisPipe
from workers.ai.budgets import (
    LIMITS,
    exceeded_message,
    has_default_limit,
    queue_reads,
    retry_after,
    state_of,
)
from workers.core.keys import budget_key
from workers.core.settings import Settings


class BudgetExceeded(ApiError):
    status = 429
    message = "budget exceeded"


async def budget_state(
    client: redis.asyncio.Redis, settings: Settings, owner: str, now: float | None = None
) -> dict[str, Any]:
    """The owner's limits, what is used of each, when it resets, and which are exceeded
    (`workers.ai.budgets.state_of`)."""
    now = time.time() if now is None else now
    async with client.pipeline(transaction=False) as pipe:
        queue_reads(pipe, owner, now)
        replies = await pipe.execute()
    return state_of(settings, owner, now, replies)


async def check_budget(
    client: redis.asyncio.Redis, settings: Settings, owner: str, pipe: RedisPipe | None = None
) -> None:
    """Raise `BudgetExceeded` (429) when `owner` is over a budget."""
    if not has_default_limit(settings):
        # No default limit: only a budget of the owner's own can apply. One EXISTS (on the
        # hot path's `pipe`) instead of reading the usage of every AI submission.
        key = budget_key(owner)
        if not await (pipe.execute("EXISTS", key) if pipe else client.exists(key)):
            return
    now = time.time()
    state = await budget_state(client, settings, owner, now)
    if state["exceeded"]:
        raise BudgetExceeded(
            exceeded_message(state),
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
