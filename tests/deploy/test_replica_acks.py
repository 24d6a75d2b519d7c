"""REDIS_REPLICA_ACKS: a task is accepted only once a replica holds it.

A real primary and replica (the same redis-server binary, `--replicaof`). With the replica
up, a 202 means the replica already has the task's record and message; with it down, the
gateway answers 503 and a Python publisher of our app gets `ReplicaAckError`, and the
task they were about to accept is refused: it never runs.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from tests.deploy.conftest import Processes, deploy_env, http, wait_worker_ready, worker_argv
from tests.support.processes import ROOT, start_gateway
from tests.support.waiting import wait_until
from workers.core.keys import KOMBU_UNACKED_KEY, task_key
from workers.dev.embedded_redis import EmbeddedRedis

pytestmark = pytest.mark.slow

# A worker waits 1 s (not 10) for a final state's replica: the replica is gone on purpose.
ACKS = {"REDIS_REPLICA_ACKS": "1", "REDIS_REPLICA_ACK_TIMEOUT_MS": "300",
        "REDIS_REPLICA_ACK_FINAL_TIMEOUT_MS": "1000"}  # fmt: skip
SUBMIT = "/api/v1/tasks/ai/generate"
# Our app as a Python client: prints the task id, or the error's class name.
PUBLISH = (
    "from workers.celery_app import celery_app\n"
    "try:\n"
    "    print(celery_app.send_task('generate_ai_response',"
    " kwargs={'conversation_id': 'py', 'user_message': 'hi'}).id)\n"
    "except Exception as exc:\n"
    "    print(type(exc).__name__)\n"
)


def replicas_online(primary: redis.Redis) -> int:
    return int(primary.info("replication").get("connected_slaves", 0))


def python_publish(url: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", PUBLISH], env=deploy_env(url, **ACKS), cwd=ROOT,
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return out.stdout.strip().splitlines()[-1]


def test_accepted_only_once_a_replica_holds_it(
    private_redis: Callable[..., EmbeddedRedis], processes: Processes, log_dir: Path
) -> None:
    primary_server = private_redis(name="primary")
    replica_server = private_redis(
        "--replicaof", "127.0.0.1", str(primary_server.port), name="replica"
    )
    primary = redis.Redis(port=primary_server.port, decode_responses=True)
    replica = redis.Redis(port=replica_server.port, decode_responses=True)
    url = primary_server.url
    try:
        wait_until(lambda: replicas_online(primary) == 1, 20, 0.05, "the replica in sync")
        hostname = f"acks-{uuid.uuid4().hex[:6]}@localhost"
        worker = processes(worker_argv(hostname), deploy_env(url, **ACKS), log_dir / "w-acks.log")
        wait_worker_ready(worker, primary, hostname)
        gateway = processes.register(start_gateway(url, log_dir, env=ACKS))

        # Replica up: a 202 means the replica holds the task already.
        status, _, body = http("POST", gateway.base_url + SUBMIT,
                               {"conversation_id": "c", "user_message": "hi"})  # fmt: skip
        assert status == 202, body
        assert replica.hget(task_key(body["task_id"]), "state") in ("PENDING", "STARTED",
                                                                    "SUCCESS")  # fmt: skip
        from_python = python_publish(url)
        assert replica.exists(task_key(from_python)), from_python
        for task_id in (body["task_id"], from_python):
            wait_until(lambda t=task_id: replica.hget(task_key(t), "state") == "SUCCESS",
                       30, 0.1, "the task done, its final state on the replica")  # fmt: skip

        # Replica gone: nothing is accepted, and what was about to be never runs.
        replica_server.kill()
        wait_until(lambda: replicas_online(primary) == 0, 20, 0.05, "the primary alone")
        before = set(primary.scan_iter("claw:task:*"))
        status, headers, body = http("POST", gateway.base_url + SUBMIT,
                                     {"conversation_id": "c", "user_message": "lost?"})  # fmt: skip
        assert status == 503 and headers.get("Retry-After"), body
        assert "replica" in body["error"]
        assert python_publish(url) == "ReplicaAckError"
        refused = {k for k in primary.scan_iter("claw:task:*") if k.count(":") == 2} - before
        assert len(refused) == 2, refused
        for key in refused:
            wait_until(lambda k=key: primary.hget(k, "state") == "REVOKED", 20, 0.1,
                       "the refused task revoked")  # fmt: skip

        # Their deliveries waited for the confirmation, then were dropped unrun.
        def drained() -> bool:
            queued = sum(primary.llen(k) for k in primary.scan_iter("ai_high_priority*"))
            return queued == 0 and primary.hlen(KOMBU_UNACKED_KEY) == 0

        wait_until(drained, 30, 0.1, "no delivery of a refused task left")
        for key in refused:
            assert not primary.hget(key, "started_at"), primary.hgetall(key)
            assert not primary.exists(f"{key}:chunks")
        status, _, health = http("GET", f"{gateway.base_url}/healthz")
        assert status == 200, health
    finally:
        primary.close()
        replica.close()


def test_a_task_runs_only_under_a_claim_a_replica_holds(
    private_redis: Callable[..., EmbeddedRedis], processes: Processes, log_dir: Path
) -> None:
    """A claim is what stops a second delivery of the message from running the task; one
    no replica holds could be lost to a failover (or to a Sentinel split brain) with the
    message's pop, so the task waits for a replica instead of running under it."""
    primary_server = private_redis(name="primary")
    replica_server = private_redis(
        "--replicaof", "127.0.0.1", str(primary_server.port), name="replica"
    )
    primary = redis.Redis(port=primary_server.port, decode_responses=True)
    try:
        wait_until(lambda: replicas_online(primary) == 1, 20, 0.05, "the replica in sync")
        gateway = processes.register(start_gateway(primary_server.url, log_dir, env=ACKS))
        status, _, body = http("POST", gateway.base_url + SUBMIT,
                               {"conversation_id": "c", "user_message": "hi"})  # fmt: skip
        assert status == 202, body
        key = task_key(body["task_id"])

        # Accepted (a replica holds it), then the replica is gone before a worker claims it.
        replica_server.kill()
        wait_until(lambda: replicas_online(primary) == 0, 20, 0.05, "the primary alone")
        hostname = f"claim-{uuid.uuid4().hex[:6]}@localhost"
        log = log_dir / "w-claim.log"
        worker = processes(worker_argv(hostname), deploy_env(primary_server.url, **ACKS), log)
        wait_worker_ready(worker, primary, hostname)

        def refused_claims() -> int:
            return log.read_text(errors="replace").count(f"claim of {body['task_id']} held by 0")

        wait_until(lambda: refused_claims() >= 2, 30, 0.1, "two claims no replica held")
        # Given up each time (the record says STARTED, unclaimed, as after a worker's
        # death), and never run: no reply streamed, no result.
        record = primary.hgetall(key)
        assert record.get("claimed_by") == "" and int(record.get("deliveries", 0)) == 0, record
        assert record["state"] in ("PENDING", "STARTED"), record
        assert not primary.exists(f"{key}:chunks")

        # A replica again: the task runs, once, under a claim the replica holds.
        private_redis("--replicaof", "127.0.0.1", str(primary_server.port), name="replica2")
        wait_until(lambda: replicas_online(primary) == 1, 20, 0.05, "a replica in sync")
        wait_until(lambda: primary.hget(key, "state") == "SUCCESS", 30, 0.1, "the task done")
        record = primary.hgetall(key)
        assert record["deliveries"] == "1", record
    finally:
        primary.close()
