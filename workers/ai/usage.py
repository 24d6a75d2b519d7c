"""What AI tasks use: model, tokens, cost and time to first token, per task and in totals.

A finishing AI task writes its usage to its record and adds it to counters, in one MULTI
(`record_usage`), so totals per owner and model over any hours or days are read from one
hash per bucket, never from a scan of tasks (keys in `workers.core.keys`, section "Usage"):

- `claw:usage:h:<YYYYMMDDHH>`, `claw:usage:d:<YYYYMMDD>` hashes (UTC), field
  `<namespace>|<model>|<metric>` for each of `METRICS` (the owner's namespace, percent-
  encoded, so no owner's name reads as another's); kept USAGE_HOUR_TTL / USAGE_DAY_TTL.
- `claw:usage:recent:<ns>` sorted set: the owner's tasks of the last minute as
  `<task_id>|<run>|<tokens>`, scored by when they finished (tokens-per-minute budgets).
- `claw:usage:cost:<ns>:<YYYYMMDD>` the owner's cost of a UTC day (cost-per-day budgets).

The owner is the task's submitter (its `claw_owner` header), whose key pays for it, also
when an admin's task works on another owner's conversation. Tasks without one are counted
for `SYSTEM_NAMESPACE`. A task run twice (its worker died after the reply) is counted
twice: the provider was paid twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

from workers.core.keys import (
    task_key,
    usage_bucket_key,
    usage_cost_key,
    usage_recent_key,
)
from workers.core.ownership import SYSTEM_NAMESPACE, namespace
from workers.core.settings import Settings
from workers.taskindex.record import encode_fields

GRANULARITIES = ("hour", "day")
BUCKET_FORMAT = {"hour": "%Y%m%d%H", "day": "%Y%m%d"}
BUCKET_STEP = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
# Summed per owner and model. `ttft_ms` is the sum over the `ttft_tasks` that streamed any
# text (its average is the ratio); `unpriced` counts tasks whose model has no price.
METRICS = (
    "tasks", "prompt_tokens", "completion_tokens", "cost", "ttft_ms", "ttft_tasks", "unpriced",
)  # fmt: skip
FLOAT_METRICS = frozenset({"cost", "ttft_ms"})
SEPARATOR = "|"
# The tokens-per-minute window.
WINDOW = 60.0


@dataclass(frozen=True)
class TaskUsage:
    """What one AI task used."""

    model: str
    prompt_tokens: int
    completion_tokens: int
    cost: float
    # False: the model has no price in MODEL_PRICES, so its cost is counted as 0.
    priced: bool
    # Milliseconds from the request to the model to its first text; None without text.
    ttft_ms: float | None

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def from_result(cls, result: dict[str, Any]) -> TaskUsage:
        """The usage in an AI task's result (`workers.tasks.ai.generate_reply`)."""
        tokens = result.get("tokens") or {}
        return cls(
            model=str(result.get("model") or "unknown"),
            prompt_tokens=int(tokens.get("prompt") or 0),
            completion_tokens=int(tokens.get("completion") or 0),
            cost=float(result.get("cost") or 0.0),
            priced=bool(result.get("priced", True)),
            ttft_ms=result.get("ttft_ms"),
        )

    def record_fields(self) -> dict[str, Any]:
        """The task record's fields (`TaskRecord`) for this usage."""
        return {
            "model": self.model,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost": self.cost,
            "cost_priced": self.priced,
            "ttft_ms": self.ttft_ms,
        }

    def increments(self) -> dict[str, float]:
        return {
            "tasks": 1,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost": self.cost,
            "ttft_ms": self.ttft_ms or 0.0,
            "ttft_tasks": 1 if self.ttft_ms is not None else 0,
            "unpriced": 0 if self.priced else 1,
        }


class FirstTokenClock:
    """Wraps a chunk callback and notes when the first text came after its creation."""

    def __init__(self, on_delta: Callable[[str], None]) -> None:
        self._on_delta = on_delta
        self._started = time.monotonic()
        self.ttft_ms: float | None = None

    def __call__(self, text: str) -> None:
        if self.ttft_ms is None and text:
            self.ttft_ms = round((time.monotonic() - self._started) * 1000, 1)
        self._on_delta(text)


def bucket_stamp(granularity: str, moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(BUCKET_FORMAT[granularity])


def bucket_start(granularity: str, moment: datetime) -> datetime:
    """The start of the bucket `moment` falls in (UTC)."""
    moment = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if granularity == "day" else moment


def bucket_starts(granularity: str, start: datetime, end: datetime) -> list[datetime]:
    """The starts of the buckets from the one holding `start` to the one holding `end`."""
    current, last = bucket_start(granularity, start), bucket_start(granularity, end)
    starts = []
    while current <= last:
        starts.append(current)
        current += BUCKET_STEP[granularity]
    return starts


def record_usage(
    client: Any,
    settings: Settings,
    task_id: str | None,
    owner: str | None,
    usage: TaskUsage,
    now: float | None = None,
) -> None:
    """Write `usage` to the task's record and add it to the counters, in one MULTI."""
    now = time.time() if now is None else now
    moment = datetime.fromtimestamp(now, UTC)
    label = namespace(owner)  # percent-encoded: never holds the separator
    ttls = {"hour": settings.usage_hour_ttl, "day": settings.usage_day_ttl}
    with client.pipeline() as pipe:
        if task_id:
            flat = encode_fields(usage.record_fields())
            pipe.hset(task_key(task_id), mapping=dict(zip(flat[::2], flat[1::2], strict=True)))
        for granularity, ttl in ttls.items():
            key = usage_bucket_key(granularity, bucket_stamp(granularity, moment))
            for metric, amount in usage.increments().items():
                field = SEPARATOR.join((label, usage.model, metric))
                if metric in FLOAT_METRICS:
                    if amount:
                        pipe.hincrbyfloat(key, field, amount)
                elif amount:
                    pipe.hincrby(key, field, int(amount))
            pipe.expire(key, ttl)
        recent = usage_recent_key(owner)
        pipe.zremrangebyscore(recent, "-inf", now - WINDOW)
        # One member per run (a task run twice spent twice; see the module).
        run = SEPARATOR.join((str(task_id or ""), repr(now), str(usage.tokens)))
        pipe.zadd(recent, {run: now})
        pipe.expire(recent, int(WINDOW * 2))
        if usage.cost:
            cost_key = usage_cost_key(owner, bucket_stamp("day", moment))
            pipe.incrbyfloat(cost_key, usage.cost)
            pipe.expire(cost_key, 2 * 24 * 3600)
        pipe.execute()


def tokens_in_window(entries: Iterable[tuple[str, float]]) -> list[tuple[float, int]]:
    """(finished at, tokens) of the members of a `usage_recent_key` set, oldest first."""
    return sorted((score, int(member.rsplit(SEPARATOR, 1)[1])) for member, score in entries)


def totals(
    raw: dict[str, str], owner: str | None, group_by: tuple[str, ...]
) -> dict[tuple[str, ...], dict[str, float]]:
    """The metrics of one bucket's hash summed per group (`group_by` of owner, model);
    `owner`: that owner's only."""
    groups: dict[tuple[str, ...], dict[str, float]] = {}
    wanted = namespace(owner) if owner is not None else None
    for field, value in raw.items():
        # `<namespace>|<model>|<metric>`: the namespace has no separator, a model may.
        row_owner, _, rest = field.partition(SEPARATOR)
        model, _, metric = rest.rpartition(SEPARATOR)
        if not model or metric not in METRICS:
            continue
        if wanted is not None and row_owner != wanted:
            continue
        values = {"owner": row_owner, "model": model}
        key = tuple(values[name] for name in group_by)
        sums = groups.setdefault(key, dict.fromkeys(METRICS, 0.0))
        sums[metric] += float(value)
    return groups


def row(group_by: tuple[str, ...], key: tuple[str, ...], sums: dict[str, float]) -> dict:
    """One group's totals as the API answers them."""
    prompt, completion = int(sums["prompt_tokens"]), int(sums["completion_tokens"])
    ttft_tasks = int(sums["ttft_tasks"])
    named: dict[str, str | None] = {}
    for name, value in zip(group_by, key, strict=True):
        # Grouped by namespace, answered as the owner (None: tasks without one).
        is_system = name == "owner" and value == SYSTEM_NAMESPACE
        named[name] = None if is_system else unquote(value) if name == "owner" else value
    return {
        **named,
        "tasks": int(sums["tasks"]),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cost": round(sums["cost"], 8),
        "unpriced_tasks": int(sums["unpriced"]),
        "ttft_ms_avg": round(sums["ttft_ms"] / ttft_tasks, 1) if ttft_tasks else None,
    }


def merge(
    into: dict[tuple[str, ...], dict[str, float]], other: dict[tuple[str, ...], dict[str, float]]
) -> None:
    for key, sums in other.items():
        target = into.setdefault(key, dict.fromkeys(METRICS, 0.0))
        for metric, value in sums.items():
            target[metric] += value
