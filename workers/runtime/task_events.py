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
Nothing more is lost than with Celery's next-turn flush: when the loop's hub closes or is
reset (shutdown, a broken broker connection), a pending batch is flushed then, as Celery's
queued flush runs then (a publish that fails goes to Celery's offline buffer, which it
sends on the new connection). The task index, the feed's states and the results never
depend on these events.
"""

from __future__ import annotations

from typing import Any

from celery.worker.consumer.consumer import Consumer

EVENT_FLUSH_INTERVAL = 0.02  # seconds
# The consumer's pending flush: its timer entry, and the callback the hub runs on close.
_PENDING = "_claw_events_flush_pending"


def batch_task_events() -> None:
    """Install the batching (at worker start-up, before its consumer exists)."""
    Consumer.on_send_event_buffered = _on_send_event_buffered  # type: ignore[method-assign,assignment]


def _on_send_event_buffered(self: Any) -> None:
    hub = self.hub
    if not hub:
        return
    pending = getattr(self, _PENDING, None)
    if pending is not None and not pending[0].canceled:
        return  # a flush is due already (a cancelled timer, as at reconnection, is not)

    def flush(*_: Any) -> None:
        current = getattr(self, _PENDING, None)
        if current is None or current[1] is not flush:
            return  # flushed already (by its timer or the hub's close), or replaced
        setattr(self, _PENDING, None)
        current[0].cancel()
        hub.on_close.discard(flush)
        self._flush_events()

    if pending is not None:
        hub.on_close.discard(pending[1])
    hub.on_close.add(flush)  # the hub closes or resets before the interval: flushed then
    setattr(self, _PENDING, (hub.call_later(EVENT_FLUSH_INTERVAL, flush), flush))
