"""Our Celery app as a plain Python client (with its publish hook writing the task index).

python -m bench.our_client submit N QUEUE    # send_task in a loop; prints JSON
"""

from __future__ import annotations

import json
import sys
import time

from workers.celery_app import celery_app

NAME = "bench.noop"


def submit(count: int, queue: str) -> dict:
    last = None
    with celery_app.producer_or_acquire() as producer:
        celery_app.send_task(NAME, queue=queue, producer=producer)  # warm-up
        start = time.perf_counter()
        for _ in range(count):
            last = celery_app.send_task(NAME, queue=queue, producer=producer).id
        elapsed = time.perf_counter() - start
    return {"count": count, "seconds": elapsed, "per_second": count / elapsed, "last_id": last}


def main() -> None:
    if sys.argv[1] != "submit":
        raise SystemExit(f"unknown mode {sys.argv[1]}")
    print(json.dumps(submit(int(sys.argv[2]), sys.argv[3])))


if __name__ == "__main__":
    main()
