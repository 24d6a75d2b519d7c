"""The Redis cost of one task's whole life (publish, STARTED, SUCCESS, events, the feed):
commands and Redis CPU per task, from Redis's own `INFO commandstats` and `INFO cpu`
deltas over N no-op tasks, with the idle cost of the same processes (workers' polls,
heartbeats, the gateway's readers) over the same time subtracted.

Four setups on the same Redis, one after another: plain Celery with results; plain Celery
as a monitored deployment runs it (worker -E, `track_started`, sent events); ours with the
worker alone; ours with a gateway running too (its feed and event readers). Completion is
read from the workers' logs (one "succeeded" line per task), so the bench itself sends
Redis nothing while the tasks run.

    python -m bench.redis_cost --size small
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from bench.common import QUEUE, Proc, Row, Stack, wait_until
from bench.main import cli

SIZES = {"tiny": (100, 0.5), "small": (1000, 3.0), "full": (3000, 5.0)}
BARE_QUEUE = "bench_bare"


@dataclass
class Cost:
    commands: float  # per task
    cpu_us: float  # Redis CPU per task, microseconds
    by_command: dict[str, float]  # commands per task, by command, idle included

    def note(self) -> str:
        top = sorted(self.by_command.items(), key=lambda kv: -kv[1])[:8]
        mix = ", ".join(f"{name} {n:.1f}" for name, n in top)
        return f"{self.commands:.1f} commands ({mix}), {self.cpu_us:.0f} us"


@dataclass
class Reading:
    calls: dict[str, int]  # by command, INFO itself left out
    cpu: float  # Redis CPU seconds, user + system

    @property
    def total(self) -> int:
        return sum(self.calls.values())


def reading(stack: Stack) -> Reading:
    stats = stack.redis.info("commandstats")
    calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()
             if k != "cmdstat_info"}  # fmt: skip
    cpu = stack.redis.info("cpu")
    return Reading(calls, float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]))


def succeeded(workers: list[Proc]) -> int:
    return sum(w.log().count(" succeeded in ") for w in workers)


def measure(
    stack: Stack, workers: list[Proc], client: str, queue: str, count: int, idle: float,
    env: dict[str, Any],
) -> Cost:  # fmt: skip
    """Idle rates first, then `count` tasks sent by `client` (a bench client module) in
    one process and run by `workers`."""
    before_idle, t0 = reading(stack), time.monotonic()
    time.sleep(idle)  # the measured interval itself, not a synchronization
    after_idle, t1 = reading(stack), time.monotonic()
    idle_calls = (after_idle.total - before_idle.total) / (t1 - t0)
    idle_cpu = (after_idle.cpu - before_idle.cpu) / (t1 - t0)
    done_before = succeeded(workers)
    start, t2 = reading(stack), time.monotonic()
    stack.run_json(["-m", client, "submit", str(count), queue], **env)
    wait_until(lambda: succeeded(workers) - done_before >= count, 300, f"{count} tasks done")
    end, t3 = reading(stack), time.monotonic()
    calls = end.total - start.total - idle_calls * (t3 - t2)
    cpu = end.cpu - start.cpu - idle_cpu * (t3 - t2)
    by_command = {k: (n - start.calls.get(k, 0)) / count for k, n in end.calls.items()}
    return Cost(commands=calls / count, cpu_us=cpu / count * 1e6, by_command=by_command)


def plain(stack: Stack, count: int, idle: float, events: bool) -> Cost:
    env = {"BARE_EVENTS": "1"} if events else {}
    worker = stack.worker("bare", BARE_QUEUE, events=events, **env)
    try:
        return measure(stack, [worker], "bench.bare_client", BARE_QUEUE, count, idle, env)
    finally:
        stack.stop(worker)
        stack.flush()


def ours(stack: Stack, count: int, idle: float, gateway: bool) -> Cost:
    worker = stack.worker("ours", QUEUE)
    started: Proc | None = None
    try:
        if gateway:
            started, _ = stack.gateway()
        return measure(stack, [worker], "bench.our_client", QUEUE, count, idle, {})
    finally:
        if started is not None:
            stack.stop(started)
        stack.stop(worker)
        stack.flush()


def run(stack: Stack, size: str) -> list[Row]:
    count, idle = SIZES[size]
    results = {
        "plain": plain(stack, count, idle, events=False),
        "plain_events": plain(stack, count, idle, events=True),
        "ours_worker": ours(stack, count, idle, gateway=False),
        "ours_all": ours(stack, count, idle, gateway=True),
    }
    base = results["plain_events"]
    note = (
        f"{count:,} no-op tasks each, prefork -c 2, idle cost over {idle:g} s subtracted; "
        f"plain with results: {results['plain'].note()}; plain -E/track_started/sent "
        f"events: {base.note()}; ours, worker alone: {results['ours_worker'].note()}; "
        f"ours, all running: {results['ours_all'].note()}"
    )
    label = "plain Celery -E, track_started, sent events"
    return [
        Row("redis", "Redis CPU per task, all running", results["ours_all"].cpu_us,
            base.cpu_us, "us", ("le", 1.0), label, note),
        Row("redis", "Redis CPU per task, worker alone", results["ours_worker"].cpu_us,
            base.cpu_us, "us", None, label),
        Row("redis", "commands per task, all running", results["ours_all"].commands,
            base.commands, "commands", None, label),
        Row("redis", "commands per task, plain Celery with results", results["plain"].commands,
            base.commands, "commands", None, label),
    ]  # fmt: skip


if __name__ == "__main__":
    cli(run)
