"""The AI usage report (`GET /api/v1/usage`): totals per bucket and group, read from the
counters `workers.ai.usage` keeps as tasks finish (one hash per hour or day)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

import redis.asyncio

from workers.ai import usage
from workers.core.keys import usage_bucket_key


async def usage_report(
    client: redis.asyncio.Redis,
    granularity: str,
    start: datetime,
    end: datetime,
    owner: str | None,
    group_by: tuple[str, ...],
) -> dict[str, Any]:
    """Totals per bucket from `start` to `end` (the buckets holding them included), and
    over the whole range; `owner`: that owner's only (None: everyone's)."""
    starts = usage.bucket_starts(granularity, start, end)
    async with client.pipeline(transaction=False) as pipe:
        for moment in starts:
            pipe.hgetall(usage_bucket_key(granularity, usage.bucket_stamp(granularity, moment)))
        hashes = await pipe.execute()
    buckets: list[dict[str, Any]] = []
    overall: dict[tuple[str, ...], dict[str, float]] = {}
    for moment, raw in zip(starts, hashes, strict=True):
        groups = usage.totals(cast(dict[str, str], raw), owner, group_by)
        if not groups:
            continue
        usage.merge(overall, groups)
        buckets.append({"start": moment.isoformat(), "totals": _rows(group_by, groups)})
    return {
        "granularity": granularity,
        "group_by": list(group_by),
        "start": start.isoformat(),
        "end": end.isoformat(),
        "owner": owner,
        "buckets": buckets,
        "totals": _rows(group_by, overall),
    }


def _rows(group_by: tuple[str, ...], groups: dict[tuple[str, ...], dict[str, float]]) -> list:
    return [usage.row(group_by, key, sums) for key, sums in sorted(groups.items())]
