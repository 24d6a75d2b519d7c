"""The blocking client."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx

from claw_client import _core as core
from claw_client._core import API, Event, Position, Request
from claw_client.errors import ClawConnectionError


class ClawClient:
    """The gateway's API. `base_url` and `api_key` default to CLAW_URL and CLAW_API_KEY."""

    def __init__(
        self, base_url: str | None = None, api_key: str | None = None, *,
        timeout: float = 30.0, transport: httpx.BaseTransport | None = None,
    ) -> None:  # fmt: skip
        url, headers = core.settings(base_url, api_key)
        self.base_url = url
        self._http = httpx.Client(
            base_url=url, headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> ClawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- the transport ----------------------------------------------------------------

    def request(
        self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None, content: Any = None,
    ) -> httpx.Response:  # fmt: skip
        """Any call, answered as it came (no error raised for an error status)."""
        try:
            return self._http.request(
                method, path, json=json, params=params, headers=headers, content=content
            )
        except httpx.TransportError as exc:
            raise ClawConnectionError(f"{self.base_url}: {exc}") from exc

    def _call(self, req: Request) -> Any:
        return core.body_of(
            self.request(
                req.method, req.path, json=req.json, params=req.params, headers=req.headers
            )
        )

    # --- tasks ------------------------------------------------------------------------

    def submit(
        self, kind: str, body: dict[str, Any], *, idempotency_key: str | None = None,
        wait: float | None = None,
    ) -> Any:  # fmt: skip
        """Submit (`kind`: ai/generate, knowledge/vectorize, ...): {task_id, status,
        message}, or the status body when it finished within `wait` seconds."""
        return self._call(core.submit(kind, body, idempotency_key, wait))

    def generate(self, conversation_id: str, user_message: str, **options: Any) -> Any:
        body = {"conversation_id": conversation_id, "user_message": user_message, **options}
        return self.submit("ai/generate", body)

    def vectorize(self, kb_id: str, document_id: str, text: str, **options: Any) -> Any:
        body = {"kb_id": kb_id, "document_id": document_id, "text": text, **options}
        return self.submit("knowledge/vectorize", body)

    def notify(self, channel: str, recipient: str, message: str, **options: Any) -> Any:
        body = {"channel": channel, "recipient": recipient, "message": message, **options}
        return self.submit("notifications/send", body)

    def status(self, task_id: str) -> Any:
        return self._call(Request("GET", f"{API}/status/{task_id}"))

    def list(self, **filters: Any) -> Any:
        """One page: {tasks, count, next_cursor}. Filters: status, queue, name, owner
        (admin), limit, cursor."""
        return self._call(core.listing(**filters))

    def iter_tasks(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every task matching, newest first, following the cursor."""
        while True:
            page = self.list(**filters)
            yield from page["tasks"]
            if not page.get("next_cursor"):
                return
            filters["cursor"] = page["next_cursor"]

    def cancel(self, task_id: str, terminate: bool = False) -> Any:
        params = {"terminate": "true"} if terminate else {}
        return self._call(Request("POST", f"{API}/cancel/{task_id}", params))

    def retry(self, task_id: str) -> Any:
        return self._call(Request("POST", f"{API}/retry/{task_id}"))

    def stats(self) -> Any:
        return self._call(Request("GET", f"{API}/stats"))

    def wait(self, task_id: str, timeout: float = 60.0, interval: float = 0.2) -> Any:
        """The status body once the task has finished; TimeoutError after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            body = self.status(task_id)
            if body["status"] in core.TERMINAL_STATES:
                return body
            if time.monotonic() > deadline:
                raise TimeoutError(f"task {task_id} is still {body['status']}")
            time.sleep(interval)
            interval = min(interval * 1.5, 2.0)

    # --- streams ----------------------------------------------------------------------

    def _events(self, req: Request, position: Position) -> Iterator[Event]:
        with self._http.stream(
            req.method, req.path, params=req.params, json=req.json, headers=req.headers,
            timeout=core.STREAM_TIMEOUT,
        ) as resp:  # fmt: skip
            if resp.status_code == 204:
                position.done = True
                return
            if resp.status_code >= 400:
                resp.read()
                core.body_of(resp)
            parser = core.SSEParser()
            for line in resp.iter_lines():
                event = parser.feed(line)
                if event is not None and position.see(event):
                    yield event
                    if position.done:
                        return

    def stream(self, task_id: str, starting_after: int = 0) -> Iterator[Event]:
        """The task's events (GET /tasks/{id}/stream) until its final state, resuming
        after a dropped connection or a `resume` event: each event once, in order."""
        position = Position(starting_after)
        while not position.done:
            try:
                yield from self._events(core.stream_request(task_id, position.last), position)
                if not position.done:
                    position.retry(ClawConnectionError("the stream ended early"))
            except httpx.TransportError as exc:
                position.retry(ClawConnectionError(f"{self.base_url}: {exc}"))

    def generate_stream(
        self, conversation_id: str, user_message: str, **options: Any
    ) -> Iterator[Event]:
        """Submit an AI reply and stream it (`?stream=true`): `submitted` (with the
        task_id) first, then the task's events, resumed as `stream` does."""
        body = {"conversation_id": conversation_id, "user_message": user_message, **options}
        position = Position(0)
        task_id = None
        try:
            for event in self._events(core.submit("ai/generate", body, stream=True), position):
                if event.event == "submitted":
                    task_id = event.data["task_id"]
                yield event
        except httpx.TransportError as exc:
            if task_id is None:
                raise ClawConnectionError(f"{self.base_url}: {exc}") from exc
        if not position.done and task_id is not None:
            yield from self.stream(task_id, position.last)

    # --- webhooks ---------------------------------------------------------------------

    def webhook_secret(self) -> Any:
        return self._call(Request("GET", "/api/v1/webhooks/secret"))

    def rotate_webhook_secret(self) -> Any:
        return self._call(Request("POST", "/api/v1/webhooks/secret/rotate"))

    def webhook_deliveries(self, task_id: str) -> Any:
        return self._call(Request("GET", f"{API}/{task_id}/webhooks"))

    def redeliver_webhook(self, task_id: str, webhook_id: str | None = None) -> Any:
        body = {"webhook_id": webhook_id} if webhook_id else {}
        return self._call(Request("POST", f"{API}/{task_id}/webhooks/redeliver", json=body))
