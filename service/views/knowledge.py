"""The knowledge base reads: `GET /api/v1/knowledge` (the caller's bases), `GET
/api/v1/knowledge/{kb_id}/documents` (a base's documents) and `GET
/api/v1/knowledge/{kb_id}/search` (its best-matching chunks).

The base is the caller's own (an admin key may name another `owner`); one the acting
owner does not have answers 404 (`service.ownership`).
"""

from __future__ import annotations

from typing import Any

import redis.exceptions
from aiohttp import web

from service.blocking import with_sync_redis
from service.errors import ApiError, ServiceUnavailable
from service.keys import redis_key, settings_key
from service.middlewares import principal_of
from service.ownership import acting_owner, require_knowledge_base
from service.requests import load_query
from service.schemas import shared
from service.schemas_tasks import (
    KnowledgeBasesResponse,
    KnowledgeDocumentsResponse,
    KnowledgeSearchQuery,
    KnowledgeSearchResponse,
    OwnerQuery,
)
from workers.core.settings import Settings
from workers.taskindex.status import iso


class UpstreamRefused(ApiError):
    status = 502
    message = "the embedding provider refused the query"


def _search(
    client: Any, settings: Settings, owner: str, kb_id: str, query: str, k: int
) -> list[dict[str, Any]]:
    # Imported here: the embedding code stays off the gateway's import path.
    from workers.knowledge.indexing import search

    return search(client, settings, owner, kb_id, query, k)


def _bases(client: Any, owner: str) -> list[dict[str, Any]]:
    from workers.knowledge.indexing import store_for

    bases = store_for(client, owner).knowledge_bases()
    return [{"kb_id": kb, "documents": n} for kb, n in bases.items()]


def _documents(client: Any, owner: str, kb_id: str) -> list[dict[str, Any]]:
    from workers.knowledge.indexing import store_for

    return [
        {"document_id": d.document_id, "title": d.title, "chunks": d.chunks,
         "updated_at": iso(d.updated_at), "size": len(d.text)}
        for d in store_for(client, owner).documents(kb_id)
    ]  # fmt: skip


async def knowledge_bases(request: web.Request) -> web.Response:
    """The caller's knowledge bases (an admin may name another `owner`)."""
    owner = acting_owner(principal_of(request), load_query(request, shared(OwnerQuery))["owner"])
    bases = await with_sync_redis(request, _bases, owner)
    return web.json_response(shared(KnowledgeBasesResponse).dump({"knowledge_bases": bases}))


async def knowledge_documents(request: web.Request) -> web.Response:
    """The documents of one of the caller's knowledge bases (404 for one it lacks)."""
    owner = acting_owner(principal_of(request), load_query(request, shared(OwnerQuery))["owner"])
    kb_id = request.match_info["kb_id"]
    await require_knowledge_base(request.app[redis_key], owner, kb_id, "kb_id")
    documents = await with_sync_redis(request, _documents, owner, kb_id)
    body = {"kb_id": kb_id, "documents": documents}
    return web.json_response(shared(KnowledgeDocumentsResponse).dump(body))


async def knowledge_search(request: web.Request) -> web.Response:
    params = load_query(request, shared(KnowledgeSearchQuery))
    kb_id = request.match_info["kb_id"]
    owner = acting_owner(principal_of(request), params["owner"])
    await require_knowledge_base(request.app[redis_key], owner, kb_id, "kb_id")
    from workers.runtime.base import PermanentError, TransientError

    try:
        results = await with_sync_redis(
            request, _search, request.app[settings_key], owner, kb_id, params["q"], params["k"]
        )
    except (TransientError, redis.exceptions.RedisError) as exc:
        raise ServiceUnavailable(f"search unavailable: {exc}") from None
    except PermanentError as exc:
        raise UpstreamRefused(str(exc)) from None
    body = shared(KnowledgeSearchResponse).dump(
        {"kb_id": kb_id, "query": params["q"], "k": params["k"], "results": results}
    )
    return web.json_response(body)
