"""Plain Celery client runs, in their own process so none of our publish hooks load.

python -m bench.bare_client submit N QUEUE     # send_task in a loop; prints JSON
python -m bench.bare_client roundtrip N RATE   # apply_async().get() at RATE/s
"""

from __future__ import annotations

import json
import sys
import time

from bench.bare_app import bare_app, noop


def submit(count: int, queue: str) -> dict:
    with bare_app.producer_or_acquire() as producer:
        noop.apply_async(queue=queue, producer=producer)  # warm-up: connection, declare
        start = time.perf_counter()
        for _ in range(count):
            noop.apply_async(queue=queue, producer=producer)
        elapsed = time.perf_counter() - start
    return {"count": count, "seconds": elapsed, "per_second": count / elapsed}


def roundtrip(count: int, rate: float) -> dict:
    noop.apply_async().get(timeout=30)  # warm-up
    latencies = []
    interval = 1.0 / rate
    next_at = time.perf_counter()
    for _ in range(count):
        now = time.perf_counter()
        if now < next_at:
            time.sleep(next_at - now)
        next_at += interval
        start = time.perf_counter()
        noop.apply_async().get(timeout=30)
        latencies.append(time.perf_counter() - start)
    return {"latencies": latencies}


def main() -> None:
    mode = sys.argv[1]
    if mode == "submit":
        out = submit(int(sys.argv[2]), sys.argv[3])
    elif mode == "roundtrip":
        out = roundtrip(int(sys.argv[2]), float(sys.argv[3]))
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
