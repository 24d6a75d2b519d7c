"""How many messages wait in each queue, counted across its priority lists."""

from __future__ import annotations

from typing import Any

from workers.core.queues import QUEUES
from workers.runtime.priority import PRIORITY_STEPS

SEP = ":"


def priority_keys(queue: str) -> list[str]:
    """The Redis lists kombu keeps for one queue, one per priority step."""
    return [queue if step == 0 else f"{queue}{SEP}{step}" for step in PRIORITY_STEPS]


def add_depth_reads(pipe: Any, names: tuple[str, ...] = QUEUES) -> None:
    """Queue the LLENs that `depths_from` adds up on a pipeline (sync or asyncio)."""
    for name in names:
        for key in priority_keys(name):
            pipe.llen(key)


def depths_from(sizes: list[int], names: tuple[str, ...] = QUEUES) -> dict[str, int]:
    """Messages waiting per queue, from the replies of `add_depth_reads`."""
    steps = len(PRIORITY_STEPS)
    return {name: sum(sizes[i * steps : (i + 1) * steps]) for i, name in enumerate(names)}


def queue_depths(client: Any, names: tuple[str, ...] = QUEUES) -> dict[str, int]:
    """Messages waiting per queue (a pipeline of LLENs; no scan)."""
    with client.pipeline(transaction=False) as pipe:
        add_depth_reads(pipe, names)
        return depths_from(pipe.execute(), names)
