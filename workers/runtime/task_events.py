"""A worker's task events published in batches, one PUBLISH per interval.

A worker with an event loop (prefork) buffers its task events (received, started,
succeeded, ...) and Celery flushes the buffer on the loop's next turn
(`Consumer.on_send_event_buffered`). On a busy worker a turn holds one event, so each event
is a PUBLISH through redis-py from the main process: a third of that process's time in
the drain bench, where the main process is what limits a prefork worker. Flushed
EVENT_FLUSH_INTERVAL after the first event buffered instead, they go as one `task.multi`
message (Celery's own batch format; Flower and the gateway read it) or at once when
Celery's buffer limit (24) is reached.

What waits: Flower's view and the live feed's `received` events, by at most the interval.
What may be lost: the events of that last interval when the worker's broker connection
breaks (Celery carries its offline buffer to the new connection, not a group's buffer;
its next-turn flush ran as the hub reset). The task index, the feed's states and the
results never depend on these events.
"""

from __future__ import annotations

from typing import Any

from celery.worker.consumer.consumer import Consumer

EVENT_FLUSH_INTERVAL = 0.02  # seconds
_PENDING = "_claw_events_flush_pending"


def batch_task_events() -> None:
    """Install the batching (at worker start-up, before its consumer exists)."""
    Consumer.on_send_event_buffered = _on_send_event_buffered  # type: ignore[method-assign,assignment]


def _on_send_event_buffered(self: Any) -> None:
    if not self.hub or getattr(self, _PENDING, False):
        return
    setattr(self, _PENDING, True)
    self.hub.call_later(EVENT_FLUSH_INTERVAL, _flush, self)


def _flush(consumer: Any) -> None:
    setattr(consumer, _PENDING, False)
    consumer._flush_events()
