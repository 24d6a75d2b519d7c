"""4. History scale: `list`, `status` and `stats` latency and the gateway's memory with a
small and a large task history (10 thousand and 1 million records at full size).

Records are written straight into the task index in its layout (workers/taskindex/index.py:
record hashes, sorted-set indexes, counts, expiry), with pipelines, far faster than
running the tasks; the gateway reads them exactly as it reads real ones.

    python -m bench.history --size full
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from typing import Any

import aiohttp
import redis

from bench.common import Row, Stack, pct, proc_stats, sequential_latencies
from bench.main import cli
from workers.core.keys import owner_label_key
from workers.taskindex.index import PREFIX, counts_key, index_key, owner_state_key, task_key
from workers.taskindex.labels import SEPARATOR, labels

SIZES = {"tiny": (1_000, 5_000, 30), "small": (10_000, 100_000, 200),
         "full": (10_000, 1_000_000, 500)}  # fmt: skip
BATCH = 5_000
QUEUES = ("ai_high_priority", "knowledge_default", "notification_default", "default")
NAMES = ("generate_ai_response", "vectorize_document", "send_notification", "check_task_health")
OWNERS = ("dev", "alice", "bob", "carol")


def state_of(seq: int) -> str:
    n = seq % 100
    return "SUCCESS" if n < 90 else "FAILURE" if n < 95 else "PENDING" if n < 98 else "STARTED"


def record_of(seq: int, task_id: str, t: float) -> dict[str, Any]:
    """Record `seq`, submitted at `t`: its state, queue, name and owner follow from `seq`."""
    state = state_of(seq)
    k = seq % 4
    record: dict[str, Any] = {
        "task_id": task_id, "seq": seq, "created_at": t, "submitted_at": t,
        "name": NAMES[k], "queue": QUEUES[k], "owner": OWNERS[(seq // 4) % 4], "priority": 5,
        "state": state, "updated_at": t + 0.2, "attempt": 0, "retries": "0",
        "args": "[]", "kwargs": '{"conversation_id": "c", "user_message": "hi"}',
        # One tag of 50 and one customer of 99: 2% and 1% of the history each.
        "tags": f'["t{seq % 50}"]', "metadata": f'{{"customer": "c{seq % 99}"}}',
        "labels": SEPARATOR.join(labels([f"t{seq % 50}"], {"customer": f"c{seq % 99}"})),
    }  # fmt: skip
    if state != "PENDING":
        record.update(started_at=t + 0.1, worker="w1@bench")
    if state == "SUCCESS":
        record.update(finished_at=t + 0.2, result_preview='{"ok": true}')
    elif state == "FAILURE":
        record.update(finished_at=t + 0.2, error_type="PermanentError",
                      error_message="bad input")  # fmt: skip
    return record


def indexes_of(record: dict[str, Any]) -> list[str]:
    """The sorted sets record.lua puts a record in."""
    state, queue, name, owner = (record[f] for f in ("state", "queue", "name", "owner"))
    keys = [index_key(), index_key("state", state), index_key("queue", queue),
            index_key("name", name), index_key("owner", owner),
            owner_state_key(owner, state)]  # fmt: skip
    for label in record["labels"].split(SEPARATOR):
        keys += [index_key("label", label), owner_label_key(owner, label)]
    return keys


def seed(client, first: int, last: int, sample: list[str]) -> float:  # type: ignore[no-untyped-def]
    """Records seq first..last (inclusive); returns records per second."""
    start = time.perf_counter()
    now = time.time()
    expire_at = now + 7 * 24 * 3600
    for lo in range(first, last + 1, BATCH):
        hi = min(last, lo + BATCH - 1)
        zsets: dict[str, dict[str, int]] = {}
        counts: dict[str, dict[str, int]] = {}
        with client.pipeline(transaction=False) as pipe:
            for seq in range(lo, hi + 1):
                task_id = str(uuid.uuid4())
                record = record_of(seq, task_id, now - (last - seq) * 0.01)
                state, queue, owner = (record[f] for f in ("state", "queue", "owner"))
                pipe.hset(task_key(task_id), mapping=record)
                for key in indexes_of(record):
                    zsets.setdefault(key, {})[task_id] = seq
                zsets.setdefault(f"{PREFIX}expiry", {})[task_id] = int(expire_at)
                for key in (counts_key(), counts_key("owner", owner), counts_key("queue", queue)):
                    per = counts.setdefault(key, {})
                    per[state] = per.get(state, 0) + 1
                if seq % 97 == 0 and len(sample) < 2000:
                    sample.append(task_id)
            for key, members in zsets.items():
                pipe.zadd(key, members)
            for key, per in counts.items():
                for state, n in per.items():
                    pipe.hincrby(key, state, n)
            pipe.set(f"{PREFIX}seq", hi)
            pipe.execute()
    return (last - first + 1) / (time.perf_counter() - start)


async def measure(base: str, ids: list[str], requests: int) -> dict[str, list[float]]:
    api = f"{base}/api/v1/tasks"
    async with aiohttp.ClientSession() as session:
        await sequential_latencies(session, [f"{api}/stats"] * 5)  # warm-up
        return {
            "list": await sequential_latencies(
                session, [f"{api}/list?limit=50&status=SUCCESS"] * requests
            ),
            "status": await sequential_latencies(
                session,
                [f"{api}/status/{random.choice(ids)}" for _ in range(requests)],  # noqa: S311
            ),
            "stats": await sequential_latencies(session, [f"{api}/stats"] * requests),
            "tag": await sequential_latencies(session, [f"{api}/{TAG_LIST}"] * requests),
            "metadata": await sequential_latencies(session, [f"{api}/{META_LIST}"] * requests),
        }


ROUNDS = 5
# The tag and metadata filters (issue 17): a tag's newest 50; a customer's newest 50
# successes (the metadata index walked, each record's state checked).
TAG_LIST = "list?limit=50&tag=t7"
META_LIST = "list?limit=50&metadata=customer=c42&status=SUCCESS"


def run(stack: Stack, size: str) -> list[Row]:
    """The two histories live in two databases of the same Redis, each read by its own
    gateway; the measurements alternate between them in rounds, so a change in the
    machine's load during the run weighs on both sizes alike."""
    small, large, requests = SIZES[size]
    sizes = {"small": small, "large": large}
    samples: dict[str, list[str]] = {"small": [], "large": []}
    rates, seconds, redis_mb, gateways = {}, {}, {}, {}
    for which, db in (("small", 1), ("large", 2)):
        url = f"{stack.url.rsplit('/', 1)[0]}/{db}"
        client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=300)
        start = time.perf_counter()
        rates[which] = seed(client, 1, sizes[which], samples[which])
        seconds[which] = time.perf_counter() - start
        redis_mb[which] = client.info("memory")["used_memory"] / 2**20
        client.close()
        gateways[which] = stack.gateway(REDIS_URL=url)
    latencies: dict[str, dict[str, list[float]]] = {
        w: {"list": [], "status": [], "stats": [], "tag": [], "metadata": []} for w in sizes
    }
    for _ in range(ROUNDS):
        for which in ("small", "large"):
            got = asyncio.run(
                measure(gateways[which][1], samples[which], max(1, requests // ROUNDS))
            )
            for endpoint, values in got.items():
                latencies[which][endpoint] += values
    rss = {w: proc_stats(gateways[w][0].pid)["rss_mb"] for w in sizes}
    for proc, _ in gateways.values():
        stack.stop(proc)
    label = f"at {small:,} tasks"
    rows = []
    for endpoint, path in (("list", "list?limit=50&status=SUCCESS"), ("status", "status/{id}"),
                           ("stats", "stats"), ("tag", TAG_LIST),
                           ("metadata", META_LIST)):  # fmt: skip
        for q in (50, 99):
            target = ("le", 1.2) if q == 50 else None
            rows.append(Row(
                "history", f"GET {path} p{q} at {large:,}", pct(latencies["large"][endpoint], q),
                pct(latencies["small"][endpoint], q), "ms", target, label,
                abs_max=5.0 if q == 50 else None,
            ))  # fmt: skip
    rows.append(Row(
        "history", f"gateway RSS at {large:,}", rss["large"], rss["small"], "MB", ("le", 1.1),
        label,
        f"{requests} sequential requests per endpoint and size, in {ROUNDS} alternating rounds; "
        f"two gateways, one per history (Redis db 1 and 2); seeded {large:,} records in "
        f"{seconds['large']:.0f} s ({rates['large']:,.0f}/s; {small:,} at "
        f"{rates['small']:,.0f}/s); Redis used_memory after each seeding "
        f"{redis_mb['small']:,.0f} MB, {redis_mb['large']:,.0f} MB",
    ))  # fmt: skip
    return rows


if __name__ == "__main__":
    cli(run)
