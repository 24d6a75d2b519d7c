"""The cost of replica acknowledgement: `POST /ai/generate` driven by wrk against one
gateway process with REDIS_REPLICA_ACKS=1 (a replica must hold each task before its 202;
Redis WAIT after the publish) vs. the same gateway without, on a primary with one replica.

    python -m bench.replica_acks --size small
"""

from __future__ import annotations

from bench.common import Row, Stack
from bench.loadgen import wrk
from bench.main import cli
from bench.submit import BODY, CONNECTIONS, PATH
from workers.dev.embedded_redis import EmbeddedRedis

SIZES = {"tiny": 1.0, "small": 5.0, "full": 10.0}


def run(stack: Stack, size: str) -> list[Row]:
    seconds = SIZES[size]
    replica = EmbeddedRedis(
        stack.dir / "replica", appendonly=False,
        extra_args=("--replicaof", "127.0.0.1", str(stack.redis_server.port)),
    ).start()  # fmt: skip
    try:
        rates = {}
        for acks in ("0", "1"):
            gateway, base = stack.gateway(REDIS_REPLICA_ACKS=acks)
            try:
                rates[acks] = wrk(base + PATH, seconds, connections=CONNECTIONS, post=BODY)
            finally:
                stack.stop(gateway)
                stack.flush()
    finally:
        replica.stop()
    return [
        Row("replica", "HTTP ai/generate with REDIS_REPLICA_ACKS=1", rates["1"].per_second,
            rates["0"].per_second, "tasks/s", None, "the same without acknowledgement",
            f"one replica on the same machine; wrk -t1 -c{CONNECTIONS} {seconds:g} s; with: "
            f"{rates['1'].note()}; without: {rates['0'].note()}"),
    ]  # fmt: skip


if __name__ == "__main__":
    cli(run)
