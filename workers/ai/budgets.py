"""Budgets per owner for AI tasks: tokens per minute and cost per day, the one definition of
an owner's budget state (limits, what is used, when it resets, which are exceeded).

What counts is what finished tasks used (the usage counters of `workers.ai.usage`): the
tokens of the owner's AI tasks finished in the last 60 seconds, and the cost of those
finished this UTC day. So a budget is an estimate that lags by the tasks still running:
a task already accepted always finishes (also one whose stream crosses the budget), and
tasks submitted together before any of them finished are all accepted.

Limits come from BUDGET_TOKENS_PER_MINUTE and BUDGET_COST_PER_DAY (0: unlimited) unless
the admin API set the owner's own (`claw:budget:<ns>`, `PUT /api/v1/budgets/{owner}`).

Checked wherever AI work is sent for an owner: the gateway's submissions, batches and
retries (`service/budgets.py`, the same reads with its asyncio client, then `state_of`),
and here, with a blocking client, Beat's firings of owners' schedules
(`workers.runtime.beat`) and bulk retries (`workers.tasks.bulk`).
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from workers.ai.usage import WINDOW, bucket_stamp, tokens_in_window
from workers.core.keys import budget_key, usage_cost_key, usage_recent_key
from workers.core.settings import Settings
from workers.taskindex.status import iso

LIMITS = ("tokens_per_minute", "cost_per_day")


def has_default_limit(settings: Settings) -> bool:
    """Whether a limit applies to every owner. Without one only an owner's own budget can
    apply: a check reads the owner's budget key (one EXISTS) before any usage."""
    return bool(settings.budget_tokens_per_minute or settings.budget_cost_per_day)


def queue_reads(pipe: Any, owner: str, now: float) -> None:
    """Queue on `pipe` (a blocking or an asyncio pipeline) the reads whose replies, in this
    order, `state_of` takes."""
    pipe.hgetall(budget_key(owner))
    pipe.zrangebyscore(usage_recent_key(owner), now - WINDOW, "+inf", withscores=True)
    pipe.get(usage_cost_key(owner, bucket_stamp("day", datetime.fromtimestamp(now, UTC))))


def state_of(settings: Settings, owner: str, now: float, replies: list[Any]) -> dict[str, Any]:
    """The owner's budget state from the replies to `queue_reads`: per limit its `limit`
    (`source`: `owner` when the admin API set it, else `default`), what is `used` and when
    it `resets_at`; and which are `exceeded`."""
    own, recent, cost = replies
    own = cast(dict[str, str], own)
    entries = tokens_in_window(recent)
    tokens = {
        "used": sum(n for _, n in entries),
        "resets_at": None,
        **_limit(own, "tokens_per_minute", settings.budget_tokens_per_minute, int),
    }
    if entries:
        tokens["resets_at"] = iso(_window_frees(entries, tokens["limit"]) + WINDOW)
    moment = datetime.fromtimestamp(now, UTC)
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


def exceeded_names(state: dict[str, Any]) -> str:
    """The exceeded limits in words: `tokens per minute, cost per day`."""
    return ", ".join(name.replace("_", " ") for name in state["exceeded"])


def exceeded_message(state: dict[str, Any]) -> str:
    """What a refusal says: `budget exceeded: tokens per minute`."""
    return f"budget exceeded: {exceeded_names(state)}"


def retry_after(state: dict[str, Any], now: float | None = None) -> int:
    """Whole seconds until every exceeded limit has reset (at least 1)."""
    now = time.time() if now is None else now
    resets = [
        datetime.fromisoformat(state[name]["resets_at"]).timestamp() for name in state["exceeded"]
    ]
    return max(1, math.ceil(max(resets, default=now) - now))


def budget_state(
    client: Any, settings: Settings, owner: str, now: float | None = None
) -> dict[str, Any]:
    """The owner's budget state (`state_of`), read with a blocking client."""
    now = time.time() if now is None else now
    with client.pipeline(transaction=False) as pipe:
        queue_reads(pipe, owner, now)
        replies = pipe.execute()
    return state_of(settings, owner, now, replies)


def over_budget(
    client: Any, settings: Settings, owner: str, now: float | None = None
) -> dict[str, Any] | None:
    """The owner's budget state when a limit is exceeded, else None (blocking client)."""
    if not has_default_limit(settings) and not client.exists(budget_key(owner)):
        return None
    state = budget_state(client, settings, owner, now)
    return state if state["exceeded"] else None
