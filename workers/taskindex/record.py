"""A new task's index record as its publisher knows it (the gateway, Beat, Python clients)."""

from __future__ import annotations

import time
from typing import Any

from workers.core.headers import OWNER_HEADER, RETRIED_FROM_HEADER
from workers.taskindex.index import capped_json


def submission_fields(
    name: str,
    args: Any,
    kwargs: Any,
    *,
    queue: str | None,
    priority: int | None,
    owner: str | None,
    eta: str | None = None,
    timelimit: Any = None,
    retried_from: str | None = None,
) -> dict[str, Any]:
    """A new task's index record, as its publisher knows it."""
    args_json, args_cut = capped_json(args)
    kwargs_json, kwargs_cut = capped_json(kwargs)
    return {
        "name": name,
        "queue": queue,
        "priority": priority,
        "owner": owner,
        "retried_from": retried_from,
        "eta": eta,
        "timelimit": timelimit,
        "submitted_at": repr(time.time()),
        "args": args_json,
        "kwargs": kwargs_json,
        "args_truncated": "1" if args_cut or kwargs_cut else None,
    }


def publish_fields(
    name: str, body: Any, routing_key: str | None, headers: dict, properties: dict
) -> dict[str, Any]:
    """The record fields from a Celery message about to be published."""
    args, kwargs = (
        (body[0], body[1]) if isinstance(body, list | tuple) and len(body) >= 2 else ([], {})
    )
    return submission_fields(
        name, args, kwargs, queue=routing_key, priority=properties.get("priority"),
        owner=headers.get(OWNER_HEADER), eta=headers.get("eta"),
        timelimit=headers.get("timelimit"), retried_from=headers.get(RETRIED_FROM_HEADER),
    )  # fmt: skip
