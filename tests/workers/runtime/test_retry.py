"""BaseTaskWithRetry: transient faults back off 1, 2, 4 x base; others fail at once."""

from __future__ import annotations

import itertools

import pytest

from tests.support.waiting import wait_for_state

QUEUE = "tests_retry"
BASE = 0.5  # seconds


@pytest.fixture(scope="module")
def retry_worker(redis_url, log_dir):
    from tests.support.processes import start_worker

    # A half-second base keeps the 1-2-4 spacing observable in a few seconds.
    w = start_worker(
        redis_url, log_dir, queues=QUEUE, concurrency=2, name="retry",
        env={"RETRY_BACKOFF_BASE": str(BASE), "RETRY_JITTER": "0.1"},
    )  # fmt: skip
    yield w
    w.stop()


def attempt_times(rclient, key: str) -> list[float]:
    return [float(t) for t in rclient.lrange(f"{key}:attempts", 0, -1)]


def test_transient_errors_retry_with_exponential_backoff_then_succeed(
    retry_worker, celery_app, rclient, key
) -> None:
    result = celery_app.send_task("tests.flaky", args=[key, 3], queue=QUEUE)
    done = wait_for_state(celery_app, result.id, {"SUCCESS", "FAILURE"}, timeout=30)
    assert done.state == "SUCCESS"
    assert done.result == 3  # succeeded on its third retry
    times = attempt_times(rclient, key)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) == 3
    for gap, expected in zip(gaps, (BASE, 2 * BASE, 4 * BASE), strict=True):
        # +/-10% jitter, plus a little for the worker to pick the message up.
        assert expected * 0.9 - 0.05 <= gap <= expected * 1.1 + 0.75, gaps


def test_after_max_retries_the_task_fails_with_the_error(
    retry_worker, celery_app, rclient, key
) -> None:
    result = celery_app.send_task("tests.flaky", args=[key, 100], queue=QUEUE)
    done = wait_for_state(celery_app, result.id, {"SUCCESS", "FAILURE"}, timeout=30)
    assert done.state == "FAILURE"
    assert "upstream busy" in str(done.result)
    assert len(attempt_times(rclient, key)) == 4  # the first try and 3 retries


def test_permanent_errors_fail_at_once(retry_worker, celery_app, rclient, key) -> None:
    result = celery_app.send_task("tests.flaky", args=[key, 100, True], queue=QUEUE)
    done = wait_for_state(celery_app, result.id, {"SUCCESS", "FAILURE"}, timeout=20)
    assert done.state == "FAILURE"
    assert "retrying cannot help" in str(done.result)
    assert len(attempt_times(rclient, key)) == 1


def test_a_plain_task_has_the_delivery_contract_but_no_retry_policy(
    retry_worker, celery_app, rclient, key
) -> None:
    """The retry policy is `BaseTaskWithRetry`'s alone: a plain `@celery_app.task` (on
    `PlatformTask`) fails at once on a transient fault, as Celery's own tasks do."""
    result = celery_app.send_task("tests.plain_transient", args=[key], queue=QUEUE)
    done = wait_for_state(celery_app, result.id, {"SUCCESS", "FAILURE"}, timeout=20)
    assert done.state == "FAILURE"
    assert "upstream busy" in str(done.result)
    assert len(attempt_times(rclient, key)) == 1


def test_a_deferred_duplicate_keeps_its_owner_and_headers() -> None:
    """Celery replaces a message's headers with the ones given when it republishes: the
    copy of a duplicate put back for later must still name its owner (conversations and
    knowledge bases are looked up under it)."""
    from celery.app.task import Context

    from workers.core.headers import DEFERRED_HEADER, OWNER_HEADER
    from workers.runtime.base import deferred_headers

    # Protocol 2 puts custom headers on the request itself, not under `headers`.
    request = Context({"id": "t1", OWNER_HEADER: "alice", "headers": None})
    assert deferred_headers(request) == {OWNER_HEADER: "alice", DEFERRED_HEADER: "1"}
    request = Context({"id": "t2", "headers": {"x": "1"}})
    assert deferred_headers(request) == {"x": "1", DEFERRED_HEADER: "1"}
