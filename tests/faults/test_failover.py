"""Losing the Redis machine: Sentinel failovers under steady submissions (`make test-faults`).

One primary, one replica and three sentinels (the same redis-server binary), a gateway
and two workers on the `sentinel://` URL, in-app notifications submitted over HTTP at a
steady rate with a ledger of every 202. Then, three times: kill -9 of the primary;
Sentinel promotes the replica; the killed node comes back as the new primary's replica.
Every accepted task is classified (done once, run twice, lost) as in the other fault
scenarios, without and with replica acknowledgement (REDIS_REPLICA_ACKS=1).

Redis replicates asynchronously: without acknowledgement a 202 given just before the
kill may never reach the replica that is promoted, and the task is gone with its record.
With it, a 202 means a replica holds the task, and a worker waits for a replica to hold
a task's final state before acknowledging its message.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
import redis
from celery.schedules import schedule

from tests.faults.harness import FaultStack, finish, new_base
from tests.support.processes import ManagedProcess, Worker, base_env, spawn_worker, start_gateway
from tests.support.waiting import async_wait_until, wait_until
from workers.core import queues
from workers.dev.embedded_redis import EmbeddedRedis, find_redis_server, free_port
from workers.runtime import registry

pytestmark = [pytest.mark.faults, pytest.mark.timeout(400)]

MASTER = "claw-failover"
FAILOVERS = 3
RATE = 25  # submissions per second


class Node:
    """A Redis server that keeps its port across restarts (a machine that reboots)."""

    def __init__(self, base: Path, name: str) -> None:
        self.base, self.name, self.port, self.generation = base, name, free_port(), 0
        self.server: EmbeddedRedis | None = None

    def start(self, replica_of: int | None = None) -> None:
        self.generation += 1  # a reboot with an empty disk: it syncs from the primary
        extra = ("--replicaof", "127.0.0.1", str(replica_of)) if replica_of else ()
        self.server = EmbeddedRedis(
            self.base / f"{self.name}-{self.generation}", self.port, appendonly=False,
            extra_args=extra, logfile=self.base / f"{self.name}.log",
        ).start()  # fmt: skip

    def kill(self) -> None:
        if self.server is not None:
            self.server.kill()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


class FailoverStack(FaultStack):
    """The fault stack with its broker behind Sentinel: two nodes, three sentinels."""

    def __init__(self, base: Path, env: dict) -> None:
        super().__init__(base, env=env)
        self.nodes = [Node(base, "a"), Node(base, "b")]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen] = []
        self.url = ";".join(f"sentinel://127.0.0.1:{p}" for p in self.sentinel_ports) + "/0"

    def start(self, workers: int = 2, concurrency: int = 4, queues: str = "") -> FailoverStack:
        primary, replica = self.nodes
        primary.start()
        replica.start(replica_of=primary.port)
        for n, port in enumerate(self.sentinel_ports):
            config = self.base / f"sentinel-{n}.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.base}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {primary.port} 2\n"
                f"sentinel down-after-milliseconds {MASTER} 1000\n"
                f"sentinel failover-timeout {MASTER} 4000\n"
            )
            log = open(self.base / f"sentinel-{n}.log", "ab")
            self.sentinels.append(subprocess.Popen(
                [find_redis_server(), str(config), "--sentinel"], stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            ))  # fmt: skip
        wait_until(lambda: self.primary_port() == primary.port, 20, 0.05, "sentinels ready")
        self.ledger_server.start()
        from tests.faults.ledger import LEDGER_ENV

        self.env.update({LEDGER_ENV: self.ledger_server.url, "INBOX_MAX": "1000000",
                         "REDIS_SENTINEL_MASTER": MASTER, "TASK_RECOVERY_GRACE": "8",
                         "RETRY_BACKOFF_BASE": "2"})  # fmt: skip
        self.queues, self.concurrency = "notification_default,default", concurrency
        self.gateway = start_gateway(self.url, self.logs, env=self.env)
        for _ in range(workers):
            self.add_worker()
        self.start_beat()
        return self

    def start_beat(self) -> None:
        """One Beat (RedBeat, its lock in the same Redis) sending a check every second."""
        from redbeat import RedBeatSchedulerEntry

        from workers.core.settings import load_settings
        from workers.runtime.celery_config import create_celery_app

        app = create_celery_app(load_settings(redis_url=self.url, redis_sentinel_master=MASTER))
        RedBeatSchedulerEntry(
            "failover-every-second", queues.CHECK_TASK_HEALTH,
            schedule(run_every=timedelta(seconds=1)), app=app,
        ).save()  # fmt: skip
        app.close()
        argv = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "beat"]
        self.beat = ManagedProcess(argv, base_env(self.url, **self.env), self.logs / "beat.log")

    def beat_sends(self) -> list[float]:
        """When Beat sent each scheduled check (its log's lines), in order."""
        sends = []
        for line in self.beat.log().splitlines():
            if "Sending due task failover-every-second" in line:
                stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
                sends.append(stamp.timestamp())
        return sends

    def add_worker(self) -> Worker:
        worker = spawn_worker(
            self.url, self.logs, queues=self.queues, concurrency=self.concurrency,
            name="failover", env=self.env, extra_modules=("tests.faults.ledger",),
        )  # fmt: skip
        wait_until(
            lambda: not worker.alive() or self.client.hexists(registry.WORKERS_HASH,
                                                              worker.hostname),
            45, 0.1, f"worker {worker.hostname} ready",
        )  # fmt: skip
        assert worker.alive(), worker.log()[-3000:]
        self.workers.append(worker)
        return worker

    def primary_port(self) -> int | None:
        for port in self.sentinel_ports:
            try:
                with redis.Redis(port=port, socket_timeout=0.5) as sentinel:
                    address = sentinel.sentinel_get_master_addr_by_name(MASTER)
                    if address:
                        return int(address[1])
            except redis.RedisError:
                continue
        return None

    def node_at(self, port: int | None) -> Node:
        return next(n for n in self.nodes if n.port == port)

    @property
    def client(self) -> redis.Redis:
        return redis.Redis(port=self.primary_port(), decode_responses=True)

    def run_recovery(self) -> None:
        from workers.core.settings import load_settings
        from workers.runtime.celery_config import create_celery_app

        settings = load_settings(redis_url=self.url, redis_sentinel_master=MASTER)
        app = create_celery_app(settings)
        try:
            app.send_task("recover_lost_tasks")
        finally:
            app.close()

    def stop(self) -> None:
        if getattr(self, "beat", None) is not None:
            self.beat.stop()
        for worker in self.workers:
            worker.stop()
        if self.gateway is not None:
            self.gateway.stop()
        for sentinel in self.sentinels:
            sentinel.terminate()
            sentinel.wait(10)
        for node in self.nodes:
            node.stop()
        self.ledger_server.stop()

    def fail_over(self) -> tuple[float, float]:
        """kill -9 the primary; once Sentinel names the other node, the killed one comes
        back as its replica. Returns (killed at, promoted after seconds)."""
        old = self.node_at(self.primary_port())
        old.kill()
        killed = time.time()
        wait_until(lambda: self.primary_port() not in (None, old.port), 30, 0.05,
                   "Sentinel to promote the replica")  # fmt: skip
        promoted = time.time() - killed
        old.start(replica_of=self.primary_port())
        return killed, promoted


async def steady(stack: FailoverStack, stop: asyncio.Event, answers: list) -> list[str]:
    """Submissions at RATE per second until `stop`; (time, status) of each in `answers`."""
    accepted: list[str] = []
    while not stop.is_set():
        started = time.monotonic()
        ids, statuses = await stack.submit(RATE // 5, parallel=RATE // 5)
        accepted += ids
        now = time.time()
        answers += [(now, status) for status, count in statuses.items() for _ in range(count)]
        await asyncio.sleep(max(0.0, 0.2 - (time.monotonic() - started)))  # the pace
    return accepted


async def watch_health(stack: FailoverStack, stop: asyncio.Event, seen: list) -> None:
    """/healthz every 0.1 s: (status, reason) of each answer."""
    assert stack.gateway is not None
    url = f"{stack.gateway.base_url}/healthz"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        while not stop.is_set():
            try:
                async with http.get(url) as resp:
                    seen.append((resp.status, (await resp.json()).get("reason", "")))
            except (aiohttp.ClientError, TimeoutError):
                seen.append((None, "no answer"))
            await asyncio.sleep(0.1)  # the polling pace


async def scenario(tmp_path: Path, acks: bool) -> dict:
    env = {"REDIS_REPLICA_ACKS": "1", "REDIS_REPLICA_ACK_TIMEOUT_MS": "500"} if acks else {}
    stack = FailoverStack(new_base(tmp_path), env=env)
    try:
        await asyncio.to_thread(stack.start, 2, 4)
        stop, answers = asyncio.Event(), []
        submitting = asyncio.create_task(steady(stack, stop, answers))
        health: list = []
        watching = asyncio.create_task(watch_health(stack, stop, health))
        kills, promotions, first_accepted = [], [], []
        for _ in range(FAILOVERS):
            await asyncio.sleep(2.0)  # steady traffic before each fault: the scenario's pace
            killed, promoted = await asyncio.to_thread(stack.fail_over)
            kills.append(killed)
            promotions.append(promoted)

            async def accepted_again(after: float = killed) -> bool:
                return any(t > after and s == 202 for t, s in answers)

            await async_wait_until(accepted_again, 30, 0.05, "a 202 after the failover")
            first_accepted.append(
                min((t for t, s in answers if t > killed and s == 202), default=float("nan"))
                - killed
            )
        await asyncio.sleep(2.0)
        stop.set()
        accepted = await submitting
        await watching
        done_from = time.time()
        # What was lost never finishes: the verdict counts it (a shorter wait without acks).
        await finish(stack, accepted, 90 if acks else 30, give_up=True)
        verdict = await asyncio.to_thread(stack.verdict, accepted)
        return {
            "verdict": verdict, "promotions": promotions, "first_accepted": first_accepted,
            "all_done": time.time() - done_from, "answers": answers, "health": health,
            "beat": await asyncio.to_thread(stack.beat_sends),
            "beat_alive": stack.beat.alive(), "kills": kills,
            "explained": {"lost": stack.explain(verdict.lost),
                          "twice": stack.explain(verdict.run_twice)},
        }  # fmt: skip
    finally:
        await asyncio.to_thread(stack.stop)


def report(title: str, run: dict) -> str:
    verdict = run["verdict"]
    gaps = [b - a for a, b in itertools.pairwise(run["beat"])]
    statuses: dict = {}
    for _, status in run["answers"]:
        statuses[status] = statuses.get(status, 0) + 1
    lines = [
        verdict.table(title),
        f"answers                 {dict(sorted(statuses.items(), key=str))}",
        "promoted after (s)      " + ", ".join(f"{p:.1f}" for p in run["promotions"]),
        "first 202 after kill (s) " + ", ".join(f"{t:.1f}" for t in run["first_accepted"]),
        f"all accepted work done  {run['all_done']:.1f} s after the last submission",
        f"Beat sends (1/s)        {len(run['beat'])}, closest two {min(gaps, default=0):.2f} s"
        f" apart, widest gap {max(gaps, default=0):.1f} s",
        f"/healthz meanwhile      {sum(s == 200 for s, _ in run['health'])} ok, "
        f"{sum('failover in progress' in r for _, r in run['health'])} 503 naming the failover, "
        f"{sum(s == 503 and 'failover' not in r for s, r in run['health'])} other 503",
    ]
    return "\n".join(lines)


async def test_sentinel_failovers_lose_no_accepted_task_with_replica_acks(tmp_path):
    without = await scenario(tmp_path, acks=False)
    print(report(f"{FAILOVERS} failovers, no replica acknowledgement", without))
    with_acks = await scenario(tmp_path, acks=True)
    print(report(f"{FAILOVERS} failovers, REDIS_REPLICA_ACKS=1", with_acks))
    verdict = with_acks["verdict"]
    assert verdict.accepted > 100
    assert not verdict.lost, with_acks["explained"]["lost"]
    assert not verdict.run_twice, with_acks["explained"]["twice"]
    assert not verdict.duplicated_effects and not verdict.unexpected
    # Beat outlived every failover and kept sending, each 1 s slot once (its RedBeat lock
    # and schedule follow the primary).
    sends = with_acks["beat"]
    assert with_acks["beat_alive"]
    assert any(t > with_acks["kills"][-1] + 1 for t in sends), sends
    assert min(b - a for a, b in itertools.pairwise(sends)) > 0.5, sends
    # /healthz said what was happening while it happened.
    assert any("failover in progress" in reason for _, reason in with_acks["health"])
    # Work went on after every failover.
    assert all(t < 30 for t in with_acks["first_accepted"]), with_acks["first_accepted"]
