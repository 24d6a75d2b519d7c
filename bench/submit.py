"""1. Submission throughput: `POST /ai/generate` driven by wrk (one thread, 32 keep-alive
connections, a JSON body; nobody consumes the queue: pure publish cost) vs. a plain Celery
`send_task` loop in one process on the same Redis. One gateway process as `make run` runs
it, and beside it the same with WEB_CONCURRENCY=2.

    python -m bench.submit --size small
"""

from __future__ import annotations

from bench.common import Row, Stack, queue_length, sampling
from bench.loadgen import Load, wrk
from bench.main import cli

# (seconds of wrk per gateway, tasks of the plain loop)
SIZES = {"tiny": (1.0, 300), "small": (5.0, 5000), "full": (10.0, 20000)}
CONNECTIONS = 32
PATH = "/api/v1/tasks/ai/generate"
BODY = {"conversation_id": "bench", "user_message": "hi"}


def submissions(stack: Stack, base: str, seconds: float) -> Load:
    load = wrk(base + PATH, seconds, connections=CONNECTIONS, post=BODY)
    stack.flush()  # the queue and the records of what was accepted
    return load


def run(stack: Stack, size: str) -> list[Row]:
    seconds, count = SIZES[size]
    gateway, base = stack.shared_gateway()
    with sampling(gateway.pid) as gw:
        ours = wrk(base + PATH, seconds, connections=CONNECTIONS, post=BODY)
    queued = queue_length(stack.redis, "ai_high_priority")
    stack.flush()
    two, two_base = stack.gateway(WEB_CONCURRENCY=2)
    try:
        ours_two = submissions(stack, two_base, seconds)
    finally:
        stack.stop(two)
    bare, bare_base = stack.bare_http()
    try:
        ceiling = wrk(bare_base + PATH, seconds, connections=CONNECTIONS, post=BODY)
    finally:
        stack.stop(bare)
    plain = stack.run_json(["-m", "bench.bare_client", "submit", str(count), "bench_bare_submit"])
    client = stack.run_json(["-m", "bench.our_client", "submit", str(count), "bench_submit"])
    stack.flush()
    note = (
        f"wrk -t1 -c{CONNECTIONS} {seconds:g} s; {ours.note()}; {queued:,} queued (every "
        f"202); gateway CPU {gw['cpu_percent']:.0f}% of a core"
    )
    return [
        Row("submit", "HTTP ai/generate", ours.per_second, plain["per_second"], "tasks/s",
            ("ge", 2.0), "plain send_task loop", note),
        Row("submit", "HTTP ai/generate, WEB_CONCURRENCY=2", ours_two.per_second,
            plain["per_second"], "tasks/s", None, "plain send_task loop",
            f"two gateway processes (gunicorn, uvloop workers); {ours_two.note()}"),
        Row("submit", "bare aiohttp POST, no publish", ceiling.per_second, plain["per_second"],
            "tasks/s", None, "plain send_task loop",
            f"the HTTP ceiling here: wrk against a handler that reads the body and answers "
            f"202; nothing is validated or published; {ceiling.note()}"),
        Row("submit", "our app send_task loop", client["per_second"], plain["per_second"],
            "tasks/s", None, "plain send_task loop",
            f"one process, our Celery app with its publish hook (index record per task); "
            f"{count:,} tasks each"),
    ]  # fmt: skip


if __name__ == "__main__":
    cli(run)
