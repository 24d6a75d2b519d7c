"""Server-Sent Events: the parser, and the position of a stream that resumes by itself.

Both clients feed a response's lines to `SSEParser` and hand each event to `Position.see`,
which drops what was already seen (a replay after a reconnection) and notes the last id,
the one a reconnection sends as `Last-Event-ID`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

TERMINAL_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
# Reconnections in a row without an event between them before a stream gives up, and the
# pause before each: none before the first (a drop is usually one-off), then doubling
# (0.25, 0.5, 1, 2 s: about 4 s in all, a gateway's restart).
MAX_RECONNECTS = 5
FIRST_PAUSE = 0.25


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
        return (
            self.event == "state"
            and isinstance(self.data, dict)
            and self.data.get("state") in TERMINAL_STATES
        )


class SSEParser:
    """Lines in, events out, as the SSE specification frames them."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.name = "message"
        self.data: list[str] = []
        self.id: str | None = None

    def feed(self, line: str) -> Event | None:
        """The event that `line` completes (a blank line ends one), else None."""
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
            return None  # a comment: the gateway's heartbeat
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self.name = value
        elif name == "data":
            self.data.append(value)
        elif name == "id" and value.isascii() and value.isdigit():
            self.id = value
        return None


class Position:
    """Where a resuming stream is: the last numbered event seen, whether the stream is
    over (its final state, or nothing left to send), and the reconnections in a row."""

    def __init__(self, after: int = 0) -> None:
        self.last = after
        self.done = False
        self.resumed = False
        self.reconnects = 0

    def see(self, event: Event) -> bool:
        """Whether to hand `event` to the caller: not a repeat, not a `resume`."""
        if event.event == "resume":
            # The gateway ended the stream on purpose (a slow reader, its max age): back
            # at once, after the last event seen (the one the gateway names in `data`).
            self.resumed = True
            return False
        if event.id is not None:
            if event.id <= self.last:
                return False
            self.last = event.id
        self.reconnects = 0
        self.done = event.final
        return True

    def reconnect(self, error: Exception) -> float:
        """The pause before reconnecting after a stream ended early with `error`; raises
        `error` once too many reconnections in a row found nothing new."""
        if self.resumed:
            self.resumed = False
            return 0.0
        self.reconnects += 1
        if self.reconnects > MAX_RECONNECTS:
            raise error
        return 0.0 if self.reconnects == 1 else FIRST_PAUSE * 2 ** (self.reconnects - 2)
