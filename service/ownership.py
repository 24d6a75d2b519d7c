"""Whose conversations and knowledge bases a request acts on, checked before anything runs.

They belong to the owner of the API key (`workers.core.ownership`): the worker reads the owner
from the task's header, so the same id from two owners names two resources. An admin key
may act on another owner's by naming `owner` (query parameter or body field); a user key
naming another owner is refused with 403. A knowledge base the acting owner does not have
answers 404, as a foreign task does, whether or not another owner has one by that name.
There are no shared bases: an admin reaching into an owner's namespace is the only path.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio
from aiohttp import web

from service.auth import Principal
from service.errors import Forbidden, NotFound
from service.keys import redis_key
from service.middlewares import principal_of
from workers.core import queues
from workers.core.keys import docs_key

# The body field naming an existing knowledge base, per task. Vectorize is not here: it
# creates (or updates) a base of the acting owner.
KNOWLEDGE_BASE_FIELDS = {
    queues.GENERATE_AI_RESPONSE: "knowledge_base_id",
    queues.UPDATE_KNOWLEDGE_BASE: "kb_id",
    queues.DELETE_KNOWLEDGE_VECTORS: "kb_id",
}


def acting_owner(principal: Principal, requested: str | None) -> str:
    """The caller's own owner, or (admin keys only) the one it names."""
    if requested is None or requested == principal.owner:
        return principal.owner
    if not principal.is_admin:
        raise Forbidden(
            "only admin keys may act for another owner",
            details={"owner": ["admin keys only; omit it to use your own"]},
        )
    return requested


async def require_knowledge_base(
    client: redis.asyncio.Redis, owner: str, kb_id: str, field: str
) -> None:
    """404 unless `owner` has the knowledge base (it has one once a document is in it)."""
    if not await client.exists(docs_key(owner, kb_id)):
        raise NotFound(
            "knowledge base not found", details={field: [f"no knowledge base {kb_id!r}"]}
        )


async def check_submission(request: web.Request, task_name: str, data: dict[str, Any]) -> None:
    """Settle whose resources a submission acts on, and refuse bases that owner lacks.

    `owner` stays in the task's arguments only when an admin names another owner: the task
    then acts on that owner's resources while remaining the admin's task.
    """
    principal = principal_of(request)
    owner = acting_owner(principal, data.pop("owner", None))
    if owner != principal.owner:
        data["owner"] = owner
    field = KNOWLEDGE_BASE_FIELDS.get(task_name)
    if field is not None and data.get(field):
        await require_knowledge_base(request.app[redis_key], owner, data[field], field)
