"""Where document vectors live: a narrow interface, and its Redis implementation.

The interface is what a dedicated vector database would have to provide: replace a
document's chunks as a whole, delete a document or a knowledge base, list the documents,
search by vector.

Knowledge bases belong to an owner: a store holds one owner's knowledge bases, and the
same kb id from two owners names two bases (`None` is the system namespace, see
`workers.core.ownership`).

Redis layout (prefix `claw:kb:<owner>:<kb_id>:`, built by `kb_prefix` only):
- `docs`                  hash: document id -> its current version key
- `ver:<doc>:<version>`   hash: `doc` (JSON: source text, title, metadata, model),
                          `t:<i>` chunk text, `v:<i>` vector (base64 float32)

A re-vectorized document is written under a new version key first, then one Lua script
points `docs` at it and deletes the old version: a reader (whose snapshot is also one
script) sees the old chunks or the new ones, never a mix or a half-written document.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from workers.core.keys import docs_key, kbs_key, version_key
from workers.core.lua import lua_file

# A version being written expires unless it is swapped in: a crashed writer leaves nothing.
UNFINISHED_TTL = 3600


@dataclass(frozen=True)
class Document:
    document_id: str
    text: str
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    model: str = ""
    chunks: int = 0
    updated_at: float = 0.0


@dataclass(frozen=True)
class Match:
    document_id: str
    chunk_index: int
    text: str
    score: float
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "document_id": self.document_id,
            "chunk_index": self.chunk_index,
            "title": self.title,
            "text": self.text,
            "score": round(self.score, 6),
            "metadata": self.metadata,
        }


class VectorStore(Protocol):
    """One owner's knowledge bases (the owner is given when the store is made)."""

    def replace_document(
        self, kb_id: str, document: Document, chunks: list[str], vectors: list[list[float]]
    ) -> None:
        """Make `chunks` the document's only chunks, atomically for readers."""
        ...

    def delete_document(self, kb_id: str, document_id: str) -> int:
        """Remove a document's chunks; returns how many went (0 if it had none)."""
        ...

    def delete_knowledge_base(self, kb_id: str) -> int:
        """Remove every document of a knowledge base; returns the chunks removed."""
        ...

    def knowledge_bases(self) -> dict[str, int]:
        """The owner's knowledge bases, each with its number of documents."""
        ...

    def documents(self, kb_id: str) -> list[Document]:
        """The current documents of a knowledge base, with their source text."""
        ...

    def search(
        self, kb_id: str, vector: list[float], k: int,
        keep: Callable[[str], bool] | None = None,
    ) -> list[Match]:  # fmt: skip
        """The `k` chunks most similar to `vector` (cosine), best first; only chunks whose
        text `keep` accepts, when given."""
        ...


Call = tuple[list[str], list[Any]]


def swap_version_call(owner: str | None, kb_id: str, document_id: str, version: str) -> Call:
    """workers/knowledge/scripts/swap_version.lua's KEYS and ARGV."""
    return [docs_key(owner, kb_id), version, kbs_key(owner)], [document_id, kb_id]


def delete_documents_call(owner: str | None, kb_id: str, document_id: str | None) -> Call:
    """workers/knowledge/scripts/delete_documents.lua's: one document, or all (None)."""
    return [docs_key(owner, kb_id), kbs_key(owner)], [document_id or "", kb_id]


def snapshot_documents_call(owner: str | None, kb_id: str) -> Call:
    """workers/knowledge/scripts/snapshot_documents.lua's."""
    return [docs_key(owner, kb_id)], []


def encode_vector(vector: list[float]) -> str:
    return base64.b64encode(array("f", vector).tobytes()).decode()


def decode_vector(text: str) -> array:
    return array("f", base64.b64decode(text))


def _pairs(flat: list[Any]) -> dict[str, Any]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


class RedisVectorStore:
    """Brute-force cosine search over a knowledge base's vectors in Redis.

    Fine for thousands of chunks per knowledge base; beyond that, put a vector database
    behind `VectorStore`.
    """

    def __init__(self, client: Any, owner: str | None) -> None:
        self.client = client
        self.owner = owner
        self._swap = client.register_script(lua_file("workers.knowledge", "swap_version"))
        self._delete = client.register_script(lua_file("workers.knowledge", "delete_documents"))
        self._snapshot = client.register_script(lua_file("workers.knowledge", "snapshot_documents"))

    def replace_document(
        self, kb_id: str, document: Document, chunks: list[str], vectors: list[list[float]]
    ) -> None:
        if len(chunks) != len(vectors):
            raise ValueError("one vector per chunk")
        key = version_key(self.owner, kb_id, document.document_id, uuid.uuid4().hex[:12])
        doc = {
            "document_id": document.document_id, "text": document.text,
            "title": document.title, "metadata": document.metadata,
            "model": document.model, "chunks": len(chunks), "updated_at": time.time(),
        }  # fmt: skip
        mapping: dict[str, str] = {"doc": json.dumps(doc)}
        for i, (chunk, vector) in enumerate(zip(chunks, vectors, strict=True)):
            mapping[f"t:{i}"] = chunk
            mapping[f"v:{i}"] = encode_vector(vector)
        with self.client.pipeline(transaction=False) as pipe:
            pipe.hset(key, mapping=mapping)
            pipe.expire(key, UNFINISHED_TTL)
            pipe.execute()
        keys, args = swap_version_call(self.owner, kb_id, document.document_id, key)
        self._swap(keys=keys, args=args)

    def delete_document(self, kb_id: str, document_id: str) -> int:
        keys, args = delete_documents_call(self.owner, kb_id, document_id)
        return int(self._delete(keys=keys, args=args))

    def delete_knowledge_base(self, kb_id: str) -> int:
        keys, args = delete_documents_call(self.owner, kb_id, None)
        return int(self._delete(keys=keys, args=args))

    def knowledge_bases(self) -> dict[str, int]:
        """The owner's knowledge bases and how many documents each has."""
        kb_ids = sorted(self.client.smembers(kbs_key(self.owner)))
        with self.client.pipeline(transaction=False) as pipe:
            for kb_id in kb_ids:
                pipe.hlen(docs_key(self.owner, kb_id))
            counts = pipe.execute()
        return {kb: n for kb, n in zip(kb_ids, counts, strict=True) if n}

    def _read(self, kb_id: str) -> list[tuple[dict[str, Any], dict[str, str]]]:
        keys, args = snapshot_documents_call(self.owner, kb_id)
        flat = self._snapshot(keys=keys, args=args)
        out = []
        for i in range(0, len(flat), 2):
            fields = _pairs(flat[i + 1])
            if "doc" in fields:
                out.append((json.loads(fields["doc"]), fields))
        return out

    def documents(self, kb_id: str) -> list[Document]:
        """The knowledge base's documents, oldest first."""
        found = [
            Document(
                document_id=doc["document_id"],
                text=doc["text"],
                title=doc.get("title", ""),
                metadata=doc.get("metadata") or {},
                model=doc.get("model", ""),
                chunks=doc.get("chunks", 0),
                updated_at=doc.get("updated_at", 0.0),
            )
            for doc, _ in self._read(kb_id)
        ]
        return sorted(found, key=lambda d: d.updated_at)

    def search(
        self, kb_id: str, vector: list[float], k: int,
        keep: Callable[[str], bool] | None = None,
    ) -> list[Match]:  # fmt: skip
        query = array("f", vector)
        matches: list[Match] = []
        for doc, fields in self._read(kb_id):
            for i in range(int(doc.get("chunks", 0))):
                text = fields.get(f"t:{i}", "")
                if keep is not None and not keep(text):
                    continue
                stored = decode_vector(fields.get(f"v:{i}", ""))
                if len(stored) != len(query):
                    continue  # embedded with another model; update_knowledge_base fixes it
                # Vectors are stored unit-length: the dot product is the cosine.
                score = sum(a * b for a, b in zip(query, stored, strict=True))
                matches.append(
                    Match(
                        document_id=doc["document_id"],
                        chunk_index=i,
                        text=text,
                        score=score,
                        title=doc.get("title", ""),
                        metadata=doc.get("metadata") or {},
                    )
                )
        matches.sort(key=lambda m: m.score, reverse=True)
        return matches[:k]
