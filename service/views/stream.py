"""`GET /api/v1/tasks/{task_id}/stream`: one task's events as Server-Sent Events.

Every event of a task (its state changes, progress, output chunks, a restart of its
output, a wait for its rate limit) is numbered from 1 in the task's event log
(`workers.core.keys.events_key`, written by the same Lua script as the record and the live
feed). A stream replays the log after the reader's `Last-Event-ID` (or `?starting_after=`),
then follows the live feed, and ends after the task's final state, whose event carries the
whole status body (`task`). The number is the SSE `id`, so a reconnecting reader (browsers'
`EventSource` do it themselves) gets every event once, in order, for as long as the
task's record is kept.

A reader never slows the gateway: the feed hands events to a bounded queue
(`SSE_BUFFER`); a reader that falls that far behind is sent `event: resume` and dropped,
and one whose socket takes nothing for `SSE_WRITE_TIMEOUT` seconds is dropped (nothing
more can reach it). A missed live event
(a gap in the numbers) or a quiet spell (`SSE_HEARTBEAT`, sent as a comment) makes the
stream read the log again, so nothing is lost between the two sources. A stream older
than `SSE_MAX_AGE` ends with `resume` as well, so long-lived readers rebalance across
gateway replicas.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

from aiohttp import web

from service.errors import BadRequest
from service.feed import TaskWatch
from service.keys import feed_key, redis_key, settings_key, task_store_key
from service.middlewares import principal_of
from service.requests import load_query
from service.schemas import StreamQuery, shared
from service.views.tasks import status_body, task_id_of, visible_task
from workers.core.keys import events_key
from workers.taskindex.index import TERMINAL_STATES
from workers.taskindex.status import on_the_wire

LAST_EVENT_ID = "Last-Event-ID"
PAGE = 500
# The SSE event name of each logged type (the record's state changes are `task` events in
# the live feed; here they are `state`).
EVENT_NAMES = {"task": "state"}
HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
}


def frame(event: str, data: dict[str, Any], seq: int | None = None) -> bytes:
    head = f"id: {seq}\n" if seq is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def starting_after(request: web.Request) -> int:
    """Where the reader is: `?starting_after=` or its `Last-Event-ID` (0: the start)."""
    after = load_query(request, shared(StreamQuery))["starting_after"]
    if after is not None:
        return int(after)
    value = request.headers.get(LAST_EVENT_ID)
    if value is None:
        return 0
    if not (value.isascii() and value.isdigit()) or len(value) > 15:  # not '²', which int() refuses
        raise BadRequest(
            "invalid stream position", details={LAST_EVENT_ID: ["a whole number, 0 or more"]}
        )
    return int(value)


async def task_stream(request: web.Request) -> web.StreamResponse:
    task_id = task_id_of(request)
    after = starting_after(request)
    record = await visible_task(request, task_id)
    return await stream_task(request, task_id, after, ended=record.get("state") in TERMINAL_STATES)


class _Stream:
    """The writing side of one reader's stream."""

    def __init__(self, request: web.Request, task_id: str, watch: TaskWatch) -> None:
        self.request = request
        self.task_id = task_id
        self.watch = watch
        self.settings = request.app[settings_key]
        self.response = web.StreamResponse(headers=HEADERS)
        self.last = 0
        self.finished = False

    async def write(self, data: bytes) -> None:
        try:
            await asyncio.wait_for(self.response.write(data), self.settings.sse_write_timeout)
        except TimeoutError:
            self.watch.end("slow reader")
            raise ConnectionResetError("the reader takes no data") from None

    async def send(self, event: dict[str, Any]) -> None:
        """One numbered event, once, in order; a final state carries the status body."""
        # Without the feed's entry id; a replayed event's time as a live one's.
        event = on_the_wire({k: v for k, v in event.items() if k != "id"})
        name = EVENT_NAMES.get(event.get("type", ""), event.get("type", "message"))
        if name == "state" and event.get("state") in TERMINAL_STATES:
            event.update(await self.final_body())
            self.finished = True
        await self.write(frame(name, event, event["seq"]))
        self.last = event["seq"]

    async def final_body(self) -> dict[str, Any]:
        """`task` (the status body, result included) and `state` for a final event."""
        record, meta = await self.request.app[task_store_key].get_with_result(self.task_id)
        if record is None:  # pruned meanwhile
            return {}
        body = status_body(record, meta, principal_of(self.request))
        return {"task_id": self.task_id, "state": body["status"], "task": body}

    async def catch_up(self) -> None:
        """Everything the log has after `last`."""
        client = self.request.app[redis_key]
        while not self.finished:
            page = cast(
                list[str],
                await client.lrange(events_key(self.task_id), self.last, self.last + PAGE - 1),
            )
            for text in page:
                await self.send(json.loads(text))
                if self.finished:
                    return
            if len(page) < PAGE:
                return

    async def follow(self) -> None:
        """Live events until the final state; back to the log on a gap or a quiet spell."""
        watch = self.watch
        loop = asyncio.get_running_loop()
        end_at = loop.time() + self.settings.sse_max_age
        while not self.finished and watch.ended is None:
            if not watch.events:
                watch.wakeup.clear()
                left = end_at - loop.time()
                if left <= 0:
                    watch.end("max age")
                    break
                try:
                    await asyncio.wait_for(
                        watch.wakeup.wait(), min(self.settings.sse_heartbeat, left)
                    )
                except TimeoutError:
                    await self.write(b": keep-alive\n\n")
                    await self.catch_up()
                continue
            event = watch.events.popleft()
            if event["seq"] <= self.last:
                continue
            if event["seq"] > self.last + 1:
                await self.catch_up()  # a missed event: the log has it
                continue
            await self.send(event)


async def stream_task(
    request: web.Request,
    task_id: str,
    after: int,
    *,
    ended: bool = False,
    first: dict[str, Any] | None = None,
) -> web.StreamResponse:
    """Answer the task's event stream after `after`. `ended`: the task had finished when
    the request came (its log holds its final event: a reader past it gets nothing more);
    `first`: an unnumbered `submitted` event sent before the rest (a submission that asked
    to stream)."""
    hub = request.app[feed_key]
    settings = request.app[settings_key]
    if ended:
        logged = await request.app[redis_key].llen(events_key(task_id))
        if logged <= after and (logged or after):
            # The reader has the final event: 204 tells an EventSource not to reconnect.
            return web.Response(status=204)
    # Watch before reading the log, so no event falls between the two.
    watch = TaskWatch(task_id, settings.sse_buffer)
    hub.watch(watch)
    stream = _Stream(request, task_id, watch)
    stream.last = after
    try:
        await stream.response.prepare(request)
        if first is not None:
            await stream.write(frame("submitted", first))
        await stream.catch_up()
        if ended and not stream.finished:
            # A task finished before event logs existed: its final state, unnumbered.
            stream.finished = True
            await stream.write(frame("state", await stream.final_body()))
        await stream.follow()
        if not stream.finished:
            reason = watch.ended or "ended"
            await stream.write(frame("resume", {"starting_after": stream.last, "reason": reason}))
        await stream.response.write_eof()
    except ConnectionResetError:
        pass  # the reader went away (or stopped reading); it resumes with its last id
    finally:
        hub.unwatch(watch)
    return stream.response
