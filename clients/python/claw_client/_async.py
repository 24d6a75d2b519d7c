"""The asyncio client: `ClawClient`'s methods as coroutines, streams as async iterators."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from contextlib import aclosing
from typing import Any

import httpx

from claw_client import _api as api
from claw_client._api import Request
from claw_client.errors import ClawConnectionError, NotFound
from claw_client.sse import TERMINAL_STATES, Event, Position, SSEParser


class AsyncClawClient:
    """The gateway's API. `base_url` and `api_key` default to CLAW_URL and CLAW_API_KEY.
    Answers are the API's JSON; an error answer raises its `ClawError` subclass."""

    def __init__(
        self, base_url: str | None = None, api_key: str | None = None, *,
        timeout: float | httpx.Timeout = 30.0, transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:  # fmt: skip
        url, headers = api.settings(base_url, api_key)
        self.base_url = url
        self._http = httpx.AsyncClient(
            base_url=url, headers=headers, timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> AsyncClawClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    # --- the transport ----------------------------------------------------------------

    async def request(
        self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None, content: Any = None,
    ) -> httpx.Response:  # fmt: skip
        """Any call, answered as it came (no error raised for an error status)."""
        try:
            return await self._http.request(
                method, path, json=json, params=params, headers=headers, content=content
            )
        except httpx.TransportError as exc:
            raise api.unreachable(self.base_url, exc) from exc

    async def _call(self, req: Request) -> Any:
        return api.body_of(
            await self.request(
                req.method,
                req.path,
                json=req.json,
                params=req.params,
                headers=req.headers,
                content=req.content,
            )
        )

    # --- tasks ------------------------------------------------------------------------

    async def submit(
        self, kind: str, body: dict[str, Any], *, idempotency_key: str | None = None,
        wait: float | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Submit (`kind`: ai/generate, knowledge/vectorize, knowledge/update,
        knowledge/delete, notifications/send): {task_id, status, message}, or the status
        body when the task finished within `wait` seconds."""
        return await self._call(api.submit(kind, body, idempotency_key, wait))

    async def generate(
        self, conversation_id: str, user_message: str, **options: Any
    ) -> dict[str, Any]:
        """An AI reply; `options`: model, knowledge_base_id, priority, countdown, ..."""
        return await self._call(api.generate(conversation_id, user_message, options))

    async def vectorize(
        self, kb_id: str, document_id: str, text: str, **options: Any
    ) -> dict[str, Any]:
        return await self._call(api.vectorize(kb_id, document_id, text, options))

    async def notify(
        self, channel: str, recipient: str, message: str, **options: Any
    ) -> dict[str, Any]:
        return await self._call(api.notify(channel, recipient, message, options))

    async def status(self, task_id: str) -> dict[str, Any]:
        return await self._call(api.status(task_id))

    async def list(
        self, status: str | None = None, queue: str | None = None, name: str | None = None,
        limit: int | None = None, cursor: str | None = None, *, owner: str | None = None,
        tag: str | None = None, metadata: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """One page, newest first: {tasks, count, next_cursor}. `owner`: admin keys only;
        `tag`, `metadata` ("key=value"): tasks submitted with them."""
        return await self._call(
            api.listing(status, queue, name, owner, limit, cursor, tag, metadata)
        )

    async def iter_tasks(
        self, status: str | None = None, queue: str | None = None, name: str | None = None,
        limit: int | None = None, *, owner: str | None = None, tag: str | None = None,
        metadata: str | None = None,
    ) -> AsyncIterator[dict[str, Any]]:  # fmt: skip
        """Every task matching (`list`'s filters), newest first, `limit` a page, following
        `next_cursor`."""
        cursor = None
        while True:
            page = await self._call(
                api.listing(status, queue, name, owner, limit, cursor, tag, metadata)
            )
            for task in page["tasks"]:
                yield task
            cursor = page.get("next_cursor")
            if not cursor:
                return

    async def cancel(self, task_id: str, terminate: bool = False) -> dict[str, Any]:
        return await self._call(api.cancel(task_id, terminate))

    async def retry(self, task_id: str) -> dict[str, Any]:
        """Submit a FAILURE or REVOKED task again: the new task's {task_id, ...}."""
        return await self._call(api.retry(task_id))

    async def stats(self) -> dict[str, Any]:
        return await self._call(api.stats())

    async def wait(
        self,
        task_id: str,
        timeout: float = 60.0,  # noqa: ASYNC109 (the same call as ClawClient.wait)
    ) -> dict[str, Any]:
        """The status body once the task is SUCCESS, FAILURE or REVOKED, followed on its
        stream (polling `status` where none can be had); TimeoutError after `timeout` s."""
        try:
            async with asyncio.timeout(timeout):
                return await self._wait(task_id)
        except TimeoutError:
            raise api.still_running(task_id, timeout) from None

    async def _wait(self, task_id: str) -> dict[str, Any]:
        body = await self.status(task_id)
        if body["status"] in TERMINAL_STATES:
            return body
        try:
            async with aclosing(self._follow(task_id, Position())) as events:
                async for event in events:
                    if event.final and event.data.get("task"):
                        return event.data["task"]
        except (ClawConnectionError, NotFound):
            pass  # no stream here (an older gateway, a proxy that cuts it): poll
        pause = api.POLL_FIRST
        while (body := await self.status(task_id))["status"] not in TERMINAL_STATES:
            await asyncio.sleep(pause)
            pause = min(pause * 1.5, api.POLL_MAX)
        return body

    # --- streams ----------------------------------------------------------------------

    async def stream(self, task_id: str, starting_after: int = 0) -> AsyncIterator[Event]:
        """The task's events (GET /tasks/{id}/stream) after `starting_after`, until its
        final state; reconnects after a dropped connection or a `resume` event with
        `Last-Event-ID`, so each event comes once, in order."""
        async for event in self._follow(task_id, Position(starting_after)):
            yield event

    async def generate_stream(
        self, conversation_id: str, user_message: str, **options: Any
    ) -> AsyncIterator[Event]:
        """Submit an AI reply and stream it (`?stream=true`): `submitted` (with the
        task_id) first, then the task's events, resumed as `stream` does."""
        position = Position()
        task_id: str | None = None
        try:
            submission = api.generate(conversation_id, user_message, options, stream=True)
            async for event in self._events(submission, position):
                if event.event == "submitted":
                    task_id = event.data["task_id"]
                yield event
        except httpx.TransportError as exc:
            if task_id is None:  # the submission itself failed
                raise api.unreachable(self.base_url, exc) from exc
        if task_id is None:
            raise ClawConnectionError(f"{self.base_url}: the submission answered no stream")
        async for event in self._follow(task_id, position):
            yield event

    async def _follow(self, task_id: str, position: Position) -> AsyncGenerator[Event]:
        """The task's stream from `position` until it is done, reconnecting as needed."""
        while not position.done:
            try:
                async for event in self._events(api.stream(task_id, position.last), position):
                    yield event
                if position.done:
                    return
                pause = position.reconnect(ClawConnectionError(f"{task_id}: the stream ended"))
            except httpx.TransportError as exc:
                pause = position.reconnect(api.unreachable(self.base_url, exc))
            await asyncio.sleep(pause)

    async def _events(self, req: Request, position: Position) -> AsyncIterator[Event]:
        """One response's new events; `position.done` once nothing more will come."""
        async with self._http.stream(
            req.method, req.path, params=req.params, json=req.json, headers=req.headers,
            timeout=api.stream_timeout(None),
        ) as resp:  # fmt: skip
            if resp.status_code == 204:  # past the final event
                position.done = True
                return
            if resp.status_code >= 400:
                await resp.aread()
                api.body_of(resp)
            parser = SSEParser()
            async for line in resp.aiter_lines():
                event = parser.feed(line)
                if event is not None and position.see(event):
                    yield event
                    if position.done:
                        return

    # --- webhooks ---------------------------------------------------------------------

    async def webhook_secret(self) -> dict[str, Any]:
        """The key's webhook signing secret(s) (`whsec_...`)."""
        return await self._call(api.webhook_secret())

    async def rotate_webhook_secret(self) -> dict[str, Any]:
        return await self._call(api.rotate_webhook_secret())

    async def webhook_deliveries(self, task_id: str) -> dict[str, Any]:
        return await self._call(api.webhook_deliveries(task_id))

    async def redeliver_webhook(
        self, task_id: str, webhook_id: str | None = None
    ) -> dict[str, Any]:
        return await self._call(api.redeliver_webhook(task_id, webhook_id))

    # --- many tasks at once ------------------------------------------------------------

    async def bulk_cancel(self, *, dry_run: bool = False, **filters: Any) -> dict[str, Any]:
        """Cancel every unstarted task `list`'s filters select (status, queue, name, tag,
        metadata="key=value", owner): the bulk task's {task_id, ...}, or with `dry_run`
        {matched, ...}."""
        return await self._call(api.bulk("cancel", filters, dry_run))

    async def bulk_retry(self, *, dry_run: bool = False, **filters: Any) -> dict[str, Any]:
        """Retry every failed or cancelled task the filters select (as `bulk_cancel`)."""
        return await self._call(api.bulk("retry", filters, dry_run))

    async def submit_batch(
        self, items: Iterable[tuple[str, dict[str, Any]]], *, webhook: str | None = None
    ) -> dict[str, Any]:
        """Submit (kind, body) pairs (kinds as `submit`'s) as one batch: {batch_id, total,
        ...}; `webhook` is called once every item has ended."""
        return await self._call(api.submit_batch(items, webhook))

    async def batch(
        self, batch_id: str, *, status: str | None = None, limit: int | None = None,
        cursor: str | int | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """A batch's progress, counts by state and a page of its items."""
        return await self._call(api.batch(batch_id, status, limit, cursor))

    async def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        return await self._call(api.cancel_batch(batch_id))

    # --- schedules (Beat fires a submission on a cron expression or an interval) ------

    async def create_schedule(
        self, task: str, arguments: dict[str, Any], *, cron: str | None = None,
        interval: float | None = None, timezone: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """Schedule the submission `task` (as `submit`'s kind) with `arguments` (its
        body): `cron` (5 fields, read in `timezone`, default UTC) or `interval` seconds."""
        return await self._call(api.create_schedule(task, arguments, cron, interval, timezone))

    async def schedules(self) -> dict[str, Any]:
        """{"schedules": [...]}: the key's (an admin key's: everyone's)."""
        return await self._call(api.schedules())

    async def schedule(self, schedule_id: str) -> dict[str, Any]:
        return await self._call(api.schedule(schedule_id))

    async def delete_schedule(self, schedule_id: str) -> None:
        await self._call(api.delete_schedule(schedule_id))
