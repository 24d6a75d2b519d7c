"""Which queues have live consumers: what tells a user why tasks wait (`/healthz`
degraded, `unconsumed_queues` in the stats, the dashboard's banner, a pending task's
`queue_state`)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, cast

from workers.core.keys import WORKERS_HASH, WORKERS_SEEN
from workers.runtime import registry
from workers.runtime.queue_depth import add_depth_reads, depths_from


@dataclass(frozen=True)
class Coverage:
    live_workers: int
    depths: dict[str, int]  # messages waiting per queue
    consumers: dict[str, int]  # live workers per queue

    @property
    def unconsumed(self) -> list[str]:
        """Queues with waiting messages and no live worker consuming them."""
        return sorted(q for q, n in self.depths.items() if n and not self.consumers.get(q))

    def reasons(self) -> list[str]:
        """Why tasks wait, in words (empty: nothing wrong)."""
        found = [] if self.live_workers else ["no live workers"]
        found += [
            f"queue {q} has {self.depths[q]} waiting and no worker consuming it"
            for q in self.unconsumed
        ]
        return found


async def coverage(client: Any) -> Coverage:
    """Live workers, the queues they consume and the queues' depths: two round trips."""
    live = cast(
        list[str],
        await client.zrangebyscore(WORKERS_SEEN, registry.live_since(time.time()), "+inf"),
    )
    async with client.pipeline(transaction=False) as pipe:
        if live:
            pipe.hmget(WORKERS_HASH, live)
        add_depth_reads(pipe)
        replies = await pipe.execute()
    consumers: dict[str, int] = {}
    for raw in replies.pop(0) if live else []:
        for queue in json.loads(raw).get("queues", []) if raw else []:
            consumers[queue] = consumers.get(queue, 0) + 1
    return Coverage(len(live), depths_from(replies), consumers)
