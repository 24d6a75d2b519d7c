"""The fault-test harness: a private platform, a ledger, and a verdict on every task.

Every scenario submits through the real gateway; the 2xx answers are the tasks that must
finish. At the end each accepted task is classified from the ledger (attempts) and from
the side effect (the in-app inbox, whose writes are guarded by an idempotency key):

  done once | lost | run twice | side effect duplicated | unexpected (ran, never accepted)
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import redis

from tests.faults.ledger import LEDGER_ENV
from tests.support.processes import Gateway, Worker, start_gateway, start_worker
from tests.support.waiting import wait_until
from workers.dev.embedded_redis import EmbeddedRedis

INBOX_USER = "dev"
SEND = "/api/v1/tasks/notifications/send"


@dataclass
class Verdict:
    accepted: int
    done_once: int = 0
    lost: list[str] = field(default_factory=list)
    run_twice: list[str] = field(default_factory=list)
    overlapping: list[str] = field(default_factory=list)
    duplicated_effects: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def table(self, title: str) -> str:
        rows = [
            ("accepted", self.accepted),
            ("done once", self.done_once),
            ("lost", len(self.lost)),
            ("run twice", len(self.run_twice)),
            ("  of which overlapping", len(self.overlapping)),
            ("side effect duplicated", len(self.duplicated_effects)),
            ("unexpected", len(self.unexpected)),
        ]
        width = max(len(r[0]) for r in rows)
        lines = [f"== {title} ==", *(f"{name:<{width}}  {n:>6}" for name, n in rows)]
        return "\n".join(lines)


class FaultStack:
    """Broker Redis (append-only), ledger Redis, a gateway and supervised workers."""

    def __init__(self, base: Path, *, fsync_always: bool = False, env: dict | None = None):
        self.base = base
        self.logs = base / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        extra = ("--appendfsync", "always") if fsync_always else ()
        self.broker = EmbeddedRedis(base / "broker", extra_args=extra, logfile=base / "broker.log")
        self.ledger_server = EmbeddedRedis(base / "ledger", appendonly=False)
        self.env = dict(env or {})
        self.workers: list[Worker] = []
        self.gateway: Gateway | None = None

    def start(
        self, workers: int = 2, concurrency: int = 4, queues: str = "notification_default,default"
    ) -> FaultStack:
        self.broker.start()
        self.ledger_server.start()
        self.env.update({LEDGER_ENV: self.ledger_server.url, "INBOX_MAX": "1000000"})
        self.env.setdefault("TASK_RECOVERY_GRACE", "8")
        # Tasks that hit an outage retry after 2 s, 4 s... instead of 1, 2... minutes.
        self.env.setdefault("RETRY_BACKOFF_BASE", "2")
        self.queues, self.concurrency = queues, concurrency
        self.gateway = start_gateway(self.broker.url, self.logs, env=self.env)
        for _ in range(workers):
            self.add_worker()
        return self

    def add_worker(self) -> Worker:
        worker = start_worker(
            self.broker.url, self.logs, queues=self.queues, concurrency=self.concurrency,
            name="fault", env=self.env, extra_modules=("tests.faults.ledger",),
        )  # fmt: skip
        self.workers.append(worker)
        return worker

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        if self.gateway is not None:
            self.gateway.stop()
        self.broker.stop()
        self.ledger_server.stop()

    @property
    def ledger(self) -> redis.Redis:
        return redis.Redis(port=self.ledger_server.port, decode_responses=True)

    @property
    def client(self) -> redis.Redis:
        return redis.Redis(port=self.broker.port, decode_responses=True)

    # --- faults ----------------------------------------------------------------------

    def kill_random_worker_process(self, rng: random.Random) -> tuple[float, int]:
        """SIGKILL a random pool process or main process of a live worker."""
        live = [w for w in self.workers if w.alive()]
        worker = rng.choice(live)
        targets = [worker.pid, *worker.pool_pids()]
        pid = rng.choice(targets)
        os.kill(pid, signal.SIGKILL)
        return time.time(), pid

    def supervise(self) -> None:
        """Restart workers whose main process died, as systemd or honcho would."""
        for worker in list(self.workers):
            if not worker.alive():
                worker.stop()
                self.workers.remove(worker)
                self.add_worker()

    def restart_broker_killed(self) -> float:
        """kill -9 the broker Redis; returns when it was killed."""
        self.broker.kill()
        return time.time()

    def start_broker_again(self) -> None:
        """Start the broker on the same port and data (its append-only file)."""
        self.broker.start()

    def run_recovery(self) -> None:
        """What Beat does every minute: send `recover_lost_tasks` (here more often)."""
        from workers.core.settings import load_settings
        from workers.runtime.celery_config import create_celery_app

        app = create_celery_app(load_settings(redis_url=self.broker.url))
        try:
            app.send_task("recover_lost_tasks")
        finally:
            app.close()

    # --- submissions -----------------------------------------------------------------

    async def submit(
        self, n: int, parallel: int = 20, answers: list | None = None, **extra: Any
    ) -> tuple[list[str], Counter]:
        """POST n in-app notifications; returns the accepted task ids and status counts.

        `answers`, when given, receives (status, seconds, Retry-After) for every request.
        """
        assert self.gateway is not None
        accepted: list[str] = []
        statuses: Counter = Counter()
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(n):
            queue.put_nowait(i)

        async def one(http: aiohttp.ClientSession) -> None:
            while not queue.empty():
                i = queue.get_nowait()
                body = {"channel": "in_app", "recipient": INBOX_USER,
                        "message": f"fault test {i}", **extra}  # fmt: skip
                started = time.monotonic()
                try:
                    async with http.post(f"{self.gateway.base_url}{SEND}", json=body) as resp:
                        statuses[resp.status] += 1
                        if resp.status == 202:
                            accepted.append((await resp.json())["task_id"])
                        if answers is not None:
                            answers.append((resp.status, time.monotonic() - started,
                                            resp.headers.get("Retry-After")))  # fmt: skip
                except (aiohttp.ClientError, TimeoutError):
                    statuses["no answer"] += 1

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            await asyncio.gather(*(one(http) for _ in range(parallel)))
        return accepted, statuses

    def wait_all_finished(self, accepted: list[str], timeout: float) -> None:
        ledger = self.ledger

        def finished() -> bool:
            with ledger.pipeline(transaction=False) as pipe:
                for task_id in accepted:
                    pipe.lrange(f"ends:{task_id}", 0, -1)
                ends = pipe.execute()
            pending = [
                t for t, e_list in zip(accepted, ends, strict=True)
                if not any(json.loads(e)["state"] == "SUCCESS" for e in e_list)
            ]  # fmt: skip
            if not pending:
                return True
            with self.client.pipeline(transaction=False) as pipe:
                for task_id in pending:
                    pipe.hget(f"claw:task:{task_id}", "state")
                return all(state == "SUCCESS" for state in pipe.execute())

        wait_until(finished, timeout, 0.5, f"{len(accepted)} accepted tasks to succeed")

    def diagnose(self, accepted: list[str], sample: int = 5) -> str:
        """Why tasks have not finished: their index records and where their messages are."""
        ledger, client = self.ledger, self.client
        stuck = [
            t for t in accepted
            if '"SUCCESS"' not in "".join(ledger.lrange(f"ends:{t}", 0, -1))
            and client.hget(f"claw:task:{t}", "state") != "SUCCESS"
        ]  # fmt: skip
        unacked = client.hgetall("unacked") or {}
        in_unacked = {json.loads(v)[0]["headers"]["id"] for v in unacked.values()}
        queued = set()
        for key in client.scan_iter("notification_default*"):
            if client.type(key) == "list":
                queued |= {json.loads(m)["headers"]["id"] for m in client.lrange(key, 0, -1)}
        lines = [f"{len(stuck)} of {len(accepted)} not finished; {len(unacked)} unacked"]
        for task_id in stuck[:sample]:
            record = client.hgetall(f"claw:task:{task_id}")
            keep = {k: record.get(k) for k in ("state", "deliveries", "claimed_by", "worker",
                                               "error_type", "eta")}  # fmt: skip
            attempts = ledger.llen(f"attempts:{task_id}")
            lines.append(
                f"  {task_id}: {keep} attempts={attempts} unacked={task_id in in_unacked} "
                f"queued={task_id in queued}"
            )
        return "\n".join(lines)

    def explain(self, task_ids: list[str], sample: int = 3) -> str:
        """Every attempt and end in the ledger and the index record of a few tasks: why a
        verdict counted them (run twice, lost)."""
        lines = []
        for task_id in task_ids[:sample]:
            record = self.client.hgetall(f"claw:task:{task_id}")
            keep = {k: record.get(k) for k in ("state", "deliveries", "claimed_by", "claimed_at",
                                               "worker", "recovered_at", "eta")}  # fmt: skip
            lines.append(f"  {task_id}: {keep}")
            for kind in ("attempts", "ends"):
                for entry in self.ledger.lrange(f"{kind}:{task_id}", 0, -1):
                    lines.append(f"    {kind[:-1]} {entry}")
        return "\n".join(lines)

    # --- the verdict -----------------------------------------------------------------

    def verdict(self, accepted: list[str], known: tuple[str, ...] = ()) -> Verdict:
        """Classify every accepted task; `known` are submitted outside the gateway."""
        ledger = self.ledger
        verdict = Verdict(accepted=len(accepted))
        inbox = Counter(
            json.loads(item).get("id")
            for item in self.client.lrange(f"claw:inbox:{INBOX_USER}", 0, -1)
        )
        accepted_set = set(accepted) | set(known)
        with self.client.pipeline(transaction=False) as pipe:
            for task_id in accepted:
                pipe.hget(f"claw:task:{task_id}", "state")
            states = dict(zip(accepted, pipe.execute(), strict=True))
        for key in ledger.scan_iter("attempts:*", count=1000):
            task_id = key.split(":", 1)[1]
            first = json.loads(ledger.lindex(key, 0) or "{}")
            # Housekeeping (the recovery sweep) is the platform's own work, not a client's.
            if task_id not in accepted_set and first.get("name") == "send_notification":
                verdict.unexpected.append(task_id)
        for task_id in accepted:
            attempts = [json.loads(a) for a in ledger.lrange(f"attempts:{task_id}", 0, -1)]
            ends = [json.loads(e) for e in ledger.lrange(f"ends:{task_id}", 0, -1)]
            # A pool process can die after storing SUCCESS and before the ledger's end
            # entry; Celery then acknowledges without running it again. The platform's
            # own record counts as the end then.
            succeeded = any(e["state"] == "SUCCESS" for e in ends) or (
                bool(attempts) and states.get(task_id) == "SUCCESS"
            )
            if not succeeded:
                verdict.lost.append(task_id)
                continue
            if inbox[task_id] > 1:
                verdict.duplicated_effects.append(task_id)
            if len(attempts) == 1:
                verdict.done_once += 1
            else:
                verdict.run_twice.append(task_id)
                starts = sorted(a["start"] for a in attempts)
                finished_at = sorted(e["end"] for e in ends)
                if len(finished_at) < len(starts) or starts[1] < finished_at[0]:
                    verdict.overlapping.append(task_id)
        return verdict

    def in_flight_at_a_kill(self, task_id: str, kills: list[float], grace: float = 1.0) -> bool:
        """Whether an attempt of the task was running (started, unfinished) at a kill."""
        ledger = self.ledger
        attempts = sorted(
            json.loads(a)["start"] for a in ledger.lrange(f"attempts:{task_id}", 0, -1)
        )
        ends = sorted(json.loads(e)["end"] for e in ledger.lrange(f"ends:{task_id}", 0, -1))
        first_start = attempts[0]
        first_end = ends[0] if len(ends) == len(attempts) else float("inf")
        return any(first_start - grace <= k <= max(first_end, first_start) + grace for k in kills)


async def finish(
    stack: FaultStack, accepted: list[str], timeout: float, *, give_up: bool = False
) -> None:
    """Wait for every accepted task to succeed, restarting dead workers meanwhile and
    running the lost-task recovery as Beat would. Past `timeout`: fail with a diagnosis,
    or with `give_up` return and let the verdict count what never finished as lost."""
    deadline = time.monotonic() + timeout
    rounds = 0
    while True:
        await asyncio.to_thread(stack.supervise)
        rounds += 1
        if rounds % 3 == 0:
            await asyncio.to_thread(stack.run_recovery)
        try:
            await asyncio.to_thread(stack.wait_all_finished, accepted, 2.0)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                if give_up:
                    return
                print(stack.diagnose(accepted))
                raise


def new_base(tmp_path: Path) -> Path:
    return tmp_path / f"fault-{uuid.uuid4().hex[:6]}"
