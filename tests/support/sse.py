"""A raw Server-Sent Events reader for tests of the wire format (the client package has
its own; this one sees exactly what the gateway writes: ids, names, comments)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass
class Event:
    name: str
    data: dict[str, Any]
    id: int | None


async def events(
    resp: aiohttp.ClientResponse, comments: list[str] | None = None
) -> AsyncIterator[Event]:
    """The events of an SSE response, as the SSE spec frames them, until it closes."""
    name, data, event_id = "message", list[str](), None
    async for raw in resp.content:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if data:
                yield Event(name, json.loads("\n".join(data)), event_id)
            name, data, event_id = "message", [], None
        elif line.startswith(":"):
            if comments is not None:
                comments.append(line[1:].strip())
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
            elif field == "id":
                event_id = int(value)
