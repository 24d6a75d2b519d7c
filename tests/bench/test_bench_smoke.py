"""The bench harness runs end to end with tiny sizes and prints every row of its table.

The benches run in three groups of about equal length (each its own `bench/run.py`, its
own Redis and processes), so `make test`'s xdist processes run them side by side."""

from __future__ import annotations

import contextlib
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

EXPECTED = [
    ("submit", "HTTP ai/generate (tasks/s)"),
    ("submit", "bare aiohttp POST, no publish (tasks/s)"),
    ("submit", "HTTP ai/generate, WEB_CONCURRENCY=2 (tasks/s)"),
    ("submit", "our app send_task loop (tasks/s)"),
    ("e2e", "submit->SUCCESS p50 (ms)"),
    ("e2e", "submit->SUCCESS p95 (ms)"),
    ("e2e", "submit->SUCCESS p99 (ms)"),
    ("drain", "no-op tasks drained, our defaults (tasks/s)"),
    ("drain", "no-op tasks drained, bare's pool settings (tasks/s)"),
    ("status", "GET status/{id} (req/s)"),
    ("status", "GET list?limit=50&status=SUCCESS (req/s)"),
    ("status", "GET stats (req/s)"),
    ("flower", "list 50 p50 at 50 run tasks (ms)"),
    ("flower", "RSS (gateway vs Flower) (MB)"),
    ("history", "GET list?limit=50&status=SUCCESS p50 at 5,000 (ms)"),
    ("history", "GET status/{id} p99 at 5,000 (ms)"),
    ("history", "GET stats p50 at 5,000 (ms)"),
    ("history", "GET list?limit=50&tag=t7 p50 at 5,000 (ms)"),
    ("history", "GET list?limit=50&metadata=customer=c42&status=SUCCESS p50 at 5,000 (ms)"),
    ("history", "gateway RSS at 5,000 (MB)"),
    ("fanout", "50 clients delay p99 (ms)"),
    ("fanout", "50 clients gateway CPU (% core)"),
    ("fanout", "broadcast 50 delay p99 (ms)"),
    ("redis", "Redis CPU per task, all running (us)"),
    ("redis", "Redis CPU per task, worker alone (us)"),
    ("redis", "commands per task, all running (commands)"),
    ("replica", "HTTP ai/generate with REDIS_REPLICA_ACKS=1 (tasks/s)"),
    ("batch", "200-item batch, submit to all done (tasks/s)"),
    ("prefetch", "last short task done behind a long one, prefetch 1 (s)"),
]


def number(text: str) -> float:
    return float(text.replace(",", "").rstrip("x"))


GROUPS = ("drain,status", "e2e,flower,replica_acks,prefetch", "submit,history,fanout",
          "redis_cost,batch")  # fmt: skip


def test_the_groups_cover_every_bench() -> None:
    from bench.run import ORDER

    assert sorted(",".join(GROUPS).split(",")) == sorted(ORDER)


@pytest.mark.slow
@pytest.mark.parametrize("group", GROUPS)
def test_bench_tiny_run_prints_every_row_with_sane_numbers(group: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    # Its own session: on a timeout the whole tree goes (its Redis, gateway, workers, Flower).
    bench = subprocess.Popen(
        [sys.executable, "bench/run.py", "--size", "tiny", "--only", group],
        cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        # Under 15 s on a quiet machine; `make test` runs other tests beside it.
        stdout, stderr = bench.communicate(timeout=90)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(bench.pid, signal.SIGKILL)
    assert bench.returncode == 0, stdout[-3000:] + stderr[-3000:]
    results = stdout.split("\nRESULTS\n", 1)[1]
    rows = {}
    for line in results.splitlines():
        cells = [c.strip() for c in line.split(" | ")]
        if len(cells) == 8 and cells[0] != "bench":
            rows[(cells[0], cells[1])] = cells
    benches = [
        {"redis_cost": "redis", "replica_acks": "replica"}.get(name, name)
        for name in group.split(",")
    ]
    for key in EXPECTED:
        assert key in rows or key[0] not in benches, f"missing row {key}:\n{results}"
    assert {bench for bench, _ in rows} == set(benches), results
    for key, cells in rows.items():
        ours, base, ratio = cells[2], cells[3], cells[5]
        assert math.isfinite(number(ours)) and number(ours) >= 0, (key, cells)
        assert math.isfinite(number(base)) and number(base) > 0, (key, cells)
        assert re.fullmatch(r"[\d.,]+x", ratio), (key, cells)
    floors = {
        EXPECTED[0]: (10, math.inf),  # HTTP submissions per second
        ("drain", "no-op tasks drained, our defaults (tasks/s)"): (10, math.inf),
        ("e2e", "submit->SUCCESS p50 (ms)"): (0, 1000),
    }
    for key, (low, high) in floors.items():
        if key in rows:
            assert low < number(rows[key][2]) < high, (key, rows[key])
