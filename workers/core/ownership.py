"""Whose conversations and knowledge bases a task works on.

The gateway publishes every task with its API key's owner in the `claw_owner` header
(`OWNER_HEADER`); a task reads it from its request. Conversations and knowledge bases live
in Redis under that owner's namespace, so the same id from two owners names two resources.

Tasks published without the header (Beat, Python clients of `celery_app`) have no owner:
they share one namespace, `SYSTEM_NAMESPACE`. A trusted publisher acts on an owner's
resources by passing the task's `owner` argument; the gateway does so only for admin keys
that name an `owner`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from workers.core.headers import OWNER_HEADER

# Owners are percent-encoded in keys, so no owner's name can produce this one (nor a ':').
SYSTEM_NAMESPACE = "@system"


def namespace(owner: str | None) -> str:
    """The key segment of an owner's resources; one-to-one, and never contains ':'."""
    return quote(owner, safe="") if owner else SYSTEM_NAMESPACE


def task_owner(request: Any, explicit: str | None = None) -> str | None:
    """The owner a running task acts for: `explicit` if given, else its header's owner."""
    return explicit or request.get(OWNER_HEADER) or None
