"""The bench harness runs end to end with tiny sizes and prints every row of its table."""

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
    ("submit", "our app send_task loop (tasks/s)"),
    ("e2e", "submit->SUCCESS p50 (ms)"),
    ("e2e", "submit->SUCCESS p95 (ms)"),
    ("e2e", "submit->SUCCESS p99 (ms)"),
    ("drain", "no-op tasks drained, our defaults (tasks/s)"),
    ("drain", "no-op tasks drained, bare's pool settings (tasks/s)"),
    ("status", "GET status/{id} (req/s)"),
    ("flower", "list 50 p50 at 50 run tasks (ms)"),
    ("flower", "RSS (gateway vs Flower) (MB)"),
    ("history", "GET list?limit=50&status=SUCCESS p50 at 5,000 (ms)"),
    ("history", "GET status/{id} p99 at 5,000 (ms)"),
    ("history", "GET stats p50 at 5,000 (ms)"),
    ("history", "gateway RSS at 5,000 (MB)"),
    ("fanout", "50 clients delay p99 (ms)"),
    ("fanout", "50 clients gateway CPU (% core)"),
    ("fanout", "broadcast 50 delay p99 (ms)"),
]


def number(text: str) -> float:
    return float(text.replace(",", "").rstrip("x"))


@pytest.mark.slow
def test_bench_tiny_run_prints_every_row_with_sane_numbers() -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    # Its own session: on a timeout the whole tree goes (its Redis, gateway, workers, Flower).
    bench = subprocess.Popen(
        [sys.executable, "bench/run.py", "--size", "tiny"], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        # Under 40 s on a quiet machine; `make test` runs other tests beside it.
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
    for key in EXPECTED:
        assert key in rows, f"missing row {key}:\n{results}"
    for key, cells in rows.items():
        ours, base, ratio = cells[2], cells[3], cells[5]
        assert math.isfinite(number(ours)) and number(ours) >= 0, (key, cells)
        assert math.isfinite(number(base)) and number(base) > 0, (key, cells)
        assert re.fullmatch(r"[\d.,]+x", ratio), (key, cells)
    assert number(rows[EXPECTED[0]][2]) > 10  # HTTP submissions per second
    assert number(rows[("drain", "no-op tasks drained, our defaults (tasks/s)")][2]) > 10
    assert 0 < number(rows[("e2e", "submit->SUCCESS p50 (ms)")][2]) < 1000
