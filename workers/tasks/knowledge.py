"""Knowledge base tasks. Chunking, embedding and the vector store arrive with issue #5."""

from __future__ import annotations

from typing import Any

from workers import queues
from workers.base import BaseTaskWithRetry, PermanentError
from workers.celery_app import celery_app

_PENDING = "knowledge base tasks are not implemented yet (issue #5)"


@celery_app.task(name=queues.VECTORIZE_DOCUMENT, base=BaseTaskWithRetry, rate_limit="5/m")
def vectorize_document(document_id: str, kb_id: str, text: str, **_: Any) -> dict[str, Any]:
    raise PermanentError(_PENDING)


@celery_app.task(name=queues.UPDATE_KNOWLEDGE_BASE, base=BaseTaskWithRetry)
def update_knowledge_base(kb_id: str) -> dict[str, Any]:
    raise PermanentError(_PENDING)


@celery_app.task(name=queues.DELETE_KNOWLEDGE_VECTORS, base=BaseTaskWithRetry)
def delete_knowledge_vectors(kb_id: str, document_id: str | None = None) -> dict[str, Any]:
    raise PermanentError(_PENDING)
