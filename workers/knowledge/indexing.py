"""Knowledge base logic: vectorize, re-embed, delete, search. Plain functions; the Celery
tasks in `workers.tasks.knowledge` are thin wrappers around them.

Knowledge bases belong to an owner: every function works on one owner's bases, through a
store made for that owner (`store_for`), or is given the owner (`search`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from workers.core.settings import Settings
from workers.knowledge.chunking import split_text
from workers.knowledge.embeddings import Embedder, embedder_for, min_score
from workers.knowledge.vector_store import Document, RedisVectorStore, VectorStore

# percent (0-100), message
Progress = Callable[[float, str], None]


def _no_progress(percent: float, message: str) -> None:
    return None


def store_for(client: Any, owner: str | None) -> VectorStore:
    """The configured vector store of `owner`'s knowledge bases (Redis; the one place to
    swap in another). `None` is the system namespace of tasks published without an owner.
    """
    return RedisVectorStore(client, owner)


def embed_in_batches(
    embedder: Embedder,
    chunks: list[str],
    batch_size: int,
    progress: Progress = _no_progress,
    *,
    start: float = 0.0,
    span: float = 100.0,
    label: str = "",
) -> list[list[float]]:
    """Embed `chunks` `batch_size` at a time, reporting progress after each batch."""
    vectors: list[list[float]] = []
    batches = max(1, -(-len(chunks) // batch_size))
    for number, offset in enumerate(range(0, len(chunks), batch_size), start=1):
        vectors += embedder.embed(chunks[offset : offset + batch_size])
        progress(start + span * number / batches, f"{label}embedded batch {number} of {batches}")
    return vectors


def vectorize(
    store: VectorStore,
    embedder: Embedder,
    settings: Settings,
    kb_id: str,
    document: Document,
    progress: Progress = _no_progress,
    *,
    start: float = 0.0,
    span: float = 100.0,
    label: str = "",
) -> dict[str, Any]:
    """Chunk, embed and store one document, replacing its previous vectors atomically."""
    chunks = split_text(document.text, settings.chunk_size, settings.chunk_overlap)
    vectors = embed_in_batches(
        embedder, chunks, settings.embedding_batch_size, progress,
        start=start, span=span * 0.95, label=label,
    )  # fmt: skip
    stored = Document(
        document_id=document.document_id, text=document.text, title=document.title,
        metadata=document.metadata, model=embedder.model,
    )  # fmt: skip
    store.replace_document(kb_id, stored, chunks, vectors)
    progress(start + span, f"{label}stored {len(chunks)} chunks")
    return {
        "kb_id": kb_id,
        "document_id": document.document_id,
        "chunks": len(chunks),
        "batches": max(1, -(-len(chunks) // settings.embedding_batch_size)),
        "embedding_model": embedder.model,
        "offline": embedder.offline,
    }


def reembed_knowledge_base(
    store: VectorStore,
    embedder: Embedder,
    settings: Settings,
    kb_id: str,
    progress: Progress = _no_progress,
) -> dict[str, Any]:
    """Re-embed every document of a knowledge base with the current embedder."""
    documents = store.documents(kb_id)
    chunks = 0
    for number, document in enumerate(documents):
        share = 100.0 / len(documents)
        result = vectorize(
            store, embedder, settings, kb_id, document, progress,
            start=number * share, span=share,
            label=f"document {number + 1} of {len(documents)}: ",
        )  # fmt: skip
        chunks += result["chunks"]
    progress(100.0, f"re-embedded {len(documents)} documents")
    return {
        "kb_id": kb_id,
        "documents": len(documents),
        "chunks": chunks,
        "embedding_model": embedder.model,
        "offline": embedder.offline,
    }


def delete_vectors(store: VectorStore, kb_id: str, document_id: str | None) -> dict[str, Any]:
    """Remove a document's vectors, or a whole knowledge base's; idempotent."""
    if document_id:
        removed = store.delete_document(kb_id, document_id)
    else:
        removed = store.delete_knowledge_base(kb_id)
    return {"kb_id": kb_id, "document_id": document_id, "removed_chunks": removed}


def search(
    client: Any, settings: Settings, owner: str | None, kb_id: str, query: str, k: int = 5
) -> list[dict[str, Any]]:
    """The `k` chunks of `owner`'s knowledge base best matching `query`, with scores; none
    scored the floor or less (KNOWLEDGE_MIN_SCORE, by default the embedder's own), none
    the embedder says cannot match (the offline one: sharing no word with the query)."""
    embedder = embedder_for(settings)
    [vector] = embedder.embed([query])
    floor = min_score(settings, embedder)
    keep = embedder.passage_filter(query)
    matches = store_for(client, owner).search(kb_id, vector, k, keep)
    return [m.as_dict() for m in matches if m.score > floor]
