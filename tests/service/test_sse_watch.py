"""A task stream's queue (service/feed.py `TaskWatch`): bounded, never waits, and ends
the stream with a reason when its reader falls behind."""

from __future__ import annotations

from service.feed import TaskWatch


async def test_a_reader_too_far_behind_is_ended_as_a_slow_reader() -> None:
    watch = TaskWatch("t", limit=10)
    for seq in range(1, 11):
        watch.offer({"seq": seq})
    assert len(watch.events) == 10 and watch.ended is None and watch.wakeup.is_set()
    watch.offer({"seq": 11})  # one too many: the queue is dropped, the stream must resume
    assert watch.ended == "slow reader" and not watch.events
    watch.offer({"seq": 12})  # nothing more is kept for an ended stream
    assert not watch.events


async def test_the_first_reason_to_end_is_kept() -> None:
    watch = TaskWatch("t", limit=10)
    watch.end("server shutdown")
    watch.end("slow reader")
    assert watch.ended == "server shutdown"
