"""The task system's health check: live and stale workers, queues with waiting messages
and no consumer, tasks lost (running past their hard limit), the failure rate. Beat runs
it (`check_task_health`, workers/tasks/maintenance.py); the gateway runs it when asked for
a report before Beat's first (`GET /api/v1/tasks/health`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from workers.core import queues
from workers.core.keys import HEALTH_REPORT_KEY, WORKERS_HASH, WORKERS_SEEN, index_key, task_key
from workers.core.settings import Settings
from workers.runtime import registry
from workers.runtime.failure_stats import failure_rate
from workers.runtime.queue_depth import queue_depths
from workers.taskindex.record import TaskRecord

STARTED_INDEX = index_key("state", "STARTED")
# Tasks checked for being lost per run, newest first: bounded work on a huge backlog.
LOST_SCAN = 5000
# A task a little past its hard limit may be in the middle of being killed.
LOST_GRACE = 30.0


def watched_queues(settings: Settings) -> tuple[str, ...]:
    """The platform's queues and HEALTH_EXTRA_QUEUES."""
    extra = tuple(q.strip() for q in settings.health_extra_queues.split(",") if q.strip())
    return tuple(dict.fromkeys(queues.QUEUES + extra))


@dataclass(frozen=True)
class Coverage:
    """Which queues live workers consume: why submitted tasks would wait. Read by the
    health check here (blocking) and by the gateway (service/coverage.py, asyncio)."""

    live_workers: int
    depths: dict[str, int]  # messages waiting per queue
    consumers: dict[str, int]  # live workers per queue

    @classmethod
    def of(cls, live: list[str], described: list[str | None], depths: dict[str, int]) -> Coverage:
        """From the live workers' registry entries (`WORKERS_HASH`, JSON) and the depths."""
        consumers: dict[str, int] = {}
        for raw in described:
            for queue in json.loads(raw).get("queues", []) if raw else []:
                consumers[queue] = consumers.get(queue, 0) + 1
        return cls(len(live), depths, consumers)

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


def lost_tasks(client: Any, now: float, default_limit: float) -> list[dict[str, Any]]:
    """STARTED tasks running longer than their hard time limit: their worker is gone."""
    ids = client.zrevrange(STARTED_INDEX, 0, LOST_SCAN - 1)
    if not ids:
        return []
    fields = ("name", "worker", "started_at", "timelimit", "queue")
    with client.pipeline(transaction=False) as pipe:
        for task_id in ids:
            pipe.hmget(task_key(task_id), *fields)
        rows = pipe.execute()
    lost = []
    for task_id, row in zip(ids, rows, strict=True):
        task = TaskRecord.from_hash({"task_id": task_id, **dict(zip(fields, row, strict=True))})
        if task.started_at is None or task.name == queues.RUN_BATCH:
            continue  # (a batch stays STARTED until its items end: workers/tasks/batches.py)
        running = now - task.started_at
        limit = (task.timelimit or [None])[0] or default_limit
        if running > limit + LOST_GRACE:
            lost.append(
                {"task_id": task.task_id, "name": task.name, "worker": task.worker,
                 "queue": task.queue, "running_for": round(running, 1), "time_limit": limit}
            )  # fmt: skip
    return lost


def health_report(client: Any, settings: Settings, now: float) -> dict[str, Any]:
    """Check the task system and store the report under `claw:health:report`."""
    seen = dict(client.zrange(WORKERS_SEEN, 0, -1, withscores=True))
    live = sorted(w for w, at in seen.items() if at >= registry.live_since(now))
    stale = sorted(w for w, at in seen.items() if at < now - settings.health_heartbeat_timeout)
    covered = Coverage.of(
        live, client.hmget(WORKERS_HASH, live) if live else [],
        queue_depths(client, watched_queues(settings)),
    )  # fmt: skip
    lost = lost_tasks(client, now, settings.task_time_limit)
    failures = failure_rate(client, now)
    failing = (
        failures["finished"] >= settings.health_min_finished
        and failures["rate"] > settings.health_failure_rate_threshold
    )
    problems = covered.reasons()
    problems += [
        f"task {t['task_id']} ({t['name']}) lost: running {t['running_for']}s" for t in lost
    ]
    if failing:
        problems.append(
            f"failure rate {failures['rate']:.0%} over the last 30 minutes "
            f"(threshold {settings.health_failure_rate_threshold:.0%})"
        )
    problems += [f"worker {w} stopped heartbeating" for w in stale]
    report = {
        "checked_at": now,
        "healthy": not problems,
        "problems": problems,
        "live_workers": live,
        "stale_workers": stale,
        "queue_depths": covered.depths,
        "queues_without_consumer": covered.unconsumed,
        "lost_tasks": lost,
        "failure_rate": {**failures, "threshold": settings.health_failure_rate_threshold,
                         "alert": failing},
    }  # fmt: skip
    client.set(HEALTH_REPORT_KEY, json.dumps(report))
    return report
