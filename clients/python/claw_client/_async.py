"""The asyncio client: `ClawClient`'s methods as coroutines, streams as async iterators."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from claw_client import _core as core
from claw_client._core import API, Event, Position, Request
from claw_client.errors import ClawConnectionError


class AsyncClawClient:
    """The gateway's API. `base_url` and `api_key` default to CLAW_URL and CLAW_API_KEY."""

    def __init__(
        self, base_url: str | None = None, api_key: str | None = None, *,
        timeout: float = 30.0, transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:  # fmt: skip
        url, headers = core.settings(base_url, api_key)
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
            raise ClawConnectionError(f"{self.base_url}: {exc}") from exc

    async def _call(self, req: Request) -> Any:
        return core.body_of(
            await self.request(
                req.method, req.path, json=req.json, params=req.params, headers=req.headers
            )
        )

    # --- tasks ------------------------------------------------------------------------

    async def submit(
        self, kind: str, body: dict[str, Any], *, idempotency_key: str | None = None,
        wait: float | None = None,
    ) -> Any:  # fmt: skip
        """Submit (`kind`: ai/generate, knowledge/vectorize, ...): {task_id, status,
        message}, or the status body when it finished within `wait` seconds."""
        return await self._call(core.submit(kind, body, idempotency_key, wait))

    async def generate(self, conversation_id: str, user_message: str, **options: Any) -> Any:
        body = {"conversation_id": conversation_id, "user_message": user_message, **options}
        return await self.submit("ai/generate", body)

    async def vectorize(self, kb_id: str, document_id: str, text: str, **options: Any) -> Any:
        body = {"kb_id": kb_id, "document_id": document_id, "text": text, **options}
        return await self.submit("knowledge/vectorize", body)

    async def notify(self, channel: str, recipient: str, message: str, **options: Any) -> Any:
        body = {"channel": channel, "recipient": recipient, "message": message, **options}
        return await self.submit("notifications/send", body)

    async def status(self, task_id: str) -> Any:
        return await self._call(Request("GET", f"{API}/status/{task_id}"))

    async def list(self, **filters: Any) -> Any:
        """One page: {tasks, count, next_cursor}. Filters: status, queue, name, owner
        (admin), limit, cursor."""
        return await self._call(core.listing(**filters))

    async def iter_tasks(self, **filters: Any) -> AsyncIterator[dict[str, Any]]:
        """Every task matching, newest first, following the cursor."""
        while True:
            page = await self.list(**filters)
            for task in page["tasks"]:
                yield task
            if not page.get("next_cursor"):
                return
            filters["cursor"] = page["next_cursor"]

    async def cancel(self, task_id: str, terminate: bool = False) -> Any:
        params = {"terminate": "true"} if terminate else {}
        return await self._call(Request("POST", f"{API}/cancel/{task_id}", params))

    async def retry(self, task_id: str) -> Any:
        return await self._call(Request("POST", f"{API}/retry/{task_id}"))

    async def stats(self) -> Any:
        return await self._call(Request("GET", f"{API}/stats"))

    async def wait(
        self,
        task_id: str,
        timeout: float = 60.0,  # noqa: ASYNC109 (the same call as ClawClient.wait)
        interval: float = 0.2,
    ) -> Any:
        """The status body once the task has finished; TimeoutError after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            body = await self.status(task_id)
            if body["status"] in core.TERMINAL_STATES:
                return body
            if time.monotonic() > deadline:
                raise TimeoutError(f"task {task_id} is still {body['status']}")
            await asyncio.sleep(interval)
            interval = min(interval * 1.5, 2.0)

    # --- streams ----------------------------------------------------------------------

    async def _events(self, req: Request, position: Position) -> AsyncIterator[Event]:
        async with self._http.stream(
            req.method, req.path, params=req.params, json=req.json, headers=req.headers,
            timeout=core.STREAM_TIMEOUT,
        ) as resp:  # fmt: skip
            if resp.status_code == 204:
                position.done = True
                return
            if resp.status_code >= 400:
                await resp.aread()
                core.body_of(resp)
            parser = core.SSEParser()
            async for line in resp.aiter_lines():
                event = parser.feed(line)
                if event is not None and position.see(event):
                    yield event
                    if position.done:
                        return

    async def stream(self, task_id: str, starting_after: int = 0) -> AsyncIterator[Event]:
        """The task's events (GET /tasks/{id}/stream) until its final state, resuming
        after a dropped connection or a `resume` event: each event once, in order."""
        position = Position(starting_after)
        while not position.done:
            try:
                request = core.stream_request(task_id, position.last)
                async for event in self._events(request, position):
                    yield event
                if not position.done:
                    position.retry(ClawConnectionError("the stream ended early"))
            except httpx.TransportError as exc:
                position.retry(ClawConnectionError(f"{self.base_url}: {exc}"))

    async def generate_stream(
        self, conversation_id: str, user_message: str, **options: Any
    ) -> AsyncIterator[Event]:
        """Submit an AI reply and stream it (`?stream=true`): `submitted` (with the
        task_id) first, then the task's events, resumed as `stream` does."""
        body = {"conversation_id": conversation_id, "user_message": user_message, **options}
        position = Position(0)
        task_id = None
        try:
            request = core.submit("ai/generate", body, stream=True)
            async for event in self._events(request, position):
                if event.event == "submitted":
                    task_id = event.data["task_id"]
                yield event
        except httpx.TransportError as exc:
            if task_id is None:
                raise ClawConnectionError(f"{self.base_url}: {exc}") from exc
        if not position.done and task_id is not None:
            async for event in self.stream(task_id, position.last):
                yield event

    # --- webhooks ---------------------------------------------------------------------

    async def webhook_secret(self) -> Any:
        return await self._call(Request("GET", "/api/v1/webhooks/secret"))

    async def rotate_webhook_secret(self) -> Any:
        return await self._call(Request("POST", "/api/v1/webhooks/secret/rotate"))

    async def webhook_deliveries(self, task_id: str) -> Any:
        return await self._call(Request("GET", f"{API}/{task_id}/webhooks"))

    async def redeliver_webhook(self, task_id: str, webhook_id: str | None = None) -> Any:
        body = {"webhook_id": webhook_id} if webhook_id else {}
        return await self._call(Request("POST", f"{API}/{task_id}/webhooks/redeliver", json=body))
