"""What the sync and async clients share: the API's requests as data, answers turned into
values or typed errors, and the Server-Sent Events parser."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import httpx

from claw_client.errors import error_for

API = "/api/v1/tasks"
DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
SUBMIT_KINDS = (
    "ai/generate", "knowledge/vectorize", "knowledge/update", "knowledge/delete",
    "notifications/send",
)  # fmt: skip
# A stream's read timeout: well above the gateway's heartbeat (SSE_HEARTBEAT, 15 s).
STREAM_TIMEOUT = httpx.Timeout(10.0, read=60.0)
# Reconnections in a row (without an event between) before a stream gives up.
MAX_RECONNECTS = 5


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Event:
    """One Server-Sent Event: `event` (state, progress, chunk, chunks_reset, waiting,
    resume, submitted), `data` (its JSON), `id` (its number; None when unnumbered)."""

    event: str
    data: Any
    id: int | None = None

    @property
    def final(self) -> bool:
        """The task's final state (its `data["task"]` is the status body)."""
        return self.event == "state" and self.data.get("state") in TERMINAL_STATES


def settings(base_url: str | None, api_key: str | None) -> tuple[str, dict[str, str]]:
    url = (base_url or os.environ.get("CLAW_URL") or DEFAULT_URL).rstrip("/")
    key = api_key if api_key is not None else os.environ.get("CLAW_API_KEY")
    return url, ({"Authorization": f"Bearer {key}"} if key else {})


def submit(
    kind: str, body: dict[str, Any], idempotency_key: str | None = None,
    wait: float | None = None, stream: bool = False,
) -> Request:  # fmt: skip
    if kind not in SUBMIT_KINDS:
        raise ValueError(f"unknown submission {kind!r}; one of {', '.join(SUBMIT_KINDS)}")
    params: dict[str, Any] = {}
    if wait is not None:
        params["wait"] = wait
    if stream:
        params["stream"] = "true"
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    return Request("POST", f"{API}/{kind}", params, body, headers)


def listing(**filters: Any) -> Request:
    return Request("GET", f"{API}/list", {k: v for k, v in filters.items() if v is not None})


def stream_request(task_id: str, after: int) -> Request:
    return Request("GET", f"{API}/{task_id}/stream", {}, None,
                   {"Last-Event-ID": str(after)} if after else {})  # fmt: skip


def body_of(response: httpx.Response) -> Any:
    """The answer's JSON; a typed ClawError for an error status."""
    try:
        body = response.json() if response.content else None
    except ValueError:
        body = response.text
    if response.status_code >= 400:
        raise error_for(response.status_code, body, response.headers.get("Retry-After"))
    return body


class SSEParser:
    """Lines in, events out, as the SSE specification frames them."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.name = "message"
        self.data: list[str] = []
        self.id: str | None = None

    def feed(self, line: str) -> Event | None:
        line = line.rstrip("\r\n")
        if not line:
            event = None
            if self.data:
                text = "\n".join(self.data)
                try:
                    payload: Any = json.loads(text)
                except ValueError:
                    payload = text
                event = Event(self.name, payload, int(self.id) if self.id else None)
            self._reset()
            return event
        if line.startswith(":"):
            return None  # a comment (heartbeat)
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self.name = value
        elif name == "data":
            self.data.append(value)
        elif name == "id" and value.isdigit():
            self.id = value
        return None


class Position:
    """Where a resuming stream is: the last numbered event, and whether it ended."""

    def __init__(self, after: int) -> None:
        self.last = after
        self.done = False
        self.reconnects = 0

    def see(self, event: Event) -> bool:
        """Whether to hand `event` to the caller (not a repeat, not a `resume`)."""
        if event.event == "resume":
            return False
        if event.id is not None:
            if event.id <= self.last:
                return False
            self.last = event.id
        self.reconnects = 0
        self.done = event.final
        return True

    def retry(self, error: Exception) -> None:
        """Another reconnection; the error once there were too many in a row."""
        self.reconnects += 1
        if self.reconnects > MAX_RECONNECTS:
            raise error
