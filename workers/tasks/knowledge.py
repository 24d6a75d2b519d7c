"""Knowledge base tasks: vectorize a document, re-embed a knowledge base, delete vectors.

Each works on the knowledge bases of the task's owner (its `claw_owner` header); `owner`
names another owner's, for trusted publishers (the gateway passes it for admin keys only).
"""

from __future__ import annotations

from typing import Any

from workers.celery_app import celery_app
from workers.core import queues
from workers.core.ownership import task_owner
from workers.core.settings import get_settings
from workers.knowledge.embeddings import embedder_for
from workers.knowledge.indexing import delete_vectors, reembed_knowledge_base, store_for, vectorize
from workers.knowledge.vector_store import Document, VectorStore
from workers.runtime.base import BaseTaskWithRetry
from workers.runtime.clients import redis_client
from workers.runtime.progress import report_progress


def _progress(task: Any) -> Any:
    task_id = task.request.id

    def report(percent: float, message: str) -> None:
        if task_id:
            report_progress(task_id, percent, message)

    return report


def _store(task: Any, owner: str | None) -> VectorStore:
    return store_for(redis_client(), task_owner(task.request, owner))


@celery_app.task(
    name=queues.VECTORIZE_DOCUMENT,
    base=BaseTaskWithRetry,
    bind=True,
    rate_limit="5/m",
    global_rate_setting="vectorize_rate_limit",
)
def vectorize_document(
    self: Any,
    document_id: str,
    kb_id: str,
    text: str,
    title: str = "",
    metadata: dict[str, Any] | None = None,
    owner: str | None = None,
) -> dict[str, Any]:
    """Chunk, embed and store a document; re-running it replaces its vectors atomically."""
    settings = get_settings()
    document = Document(document_id=document_id, text=text, title=title, metadata=metadata or {})
    return vectorize(
        _store(self, owner), embedder_for(settings), settings, kb_id, document, _progress(self)
    )


@celery_app.task(name=queues.UPDATE_KNOWLEDGE_BASE, base=BaseTaskWithRetry, bind=True)
def update_knowledge_base(self: Any, kb_id: str, owner: str | None = None) -> dict[str, Any]:
    """Re-embed every document of a knowledge base (after an embedding model change)."""
    settings = get_settings()
    return reembed_knowledge_base(
        _store(self, owner), embedder_for(settings), settings, kb_id, _progress(self)
    )


@celery_app.task(name=queues.DELETE_KNOWLEDGE_VECTORS, base=BaseTaskWithRetry, bind=True)
def delete_knowledge_vectors(
    self: Any, kb_id: str, document_id: str | None = None, owner: str | None = None
) -> dict[str, Any]:
    """Remove a document's vectors (or the whole knowledge base's); idempotent."""
    return delete_vectors(_store(self, owner), kb_id, document_id)
