"""The knowledge base listings over the API: `GET /api/v1/knowledge` (the caller's bases),
`GET /api/v1/knowledge/{kb_id}/documents` (a base's documents), and deleting through
`POST /api/v1/tasks/knowledge/delete`; every body as its OpenAPI schema says, and another
owner's bases invisible. The gateway in-process, the session's worker (offline
embeddings)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest

from service.schemas_tasks import KnowledgeBasesResponse, KnowledgeDocumentsResponse
from tests.support.api import API_KEYS, Api

T = "/api/v1/tasks"
KB = "/api/v1/knowledge"
WAIT = {"wait": "30"}


@pytest.fixture
async def secured_gateway(serve_gateway) -> Any:
    """The service tests' gateway (their alice, bob and admin call it), offline embeddings."""
    return await serve_gateway(api_keys=API_KEYS, env={"OPENAI_API_KEY": ""})


def new_kb() -> str:
    return f"kb-{uuid.uuid4().hex[:8]}"


async def vectorize(api: Api, kb: str, document_id: str, text: str, title: str = "") -> None:
    body = {"kb_id": kb, "document_id": document_id, "text": text, "title": title}
    status, done = await api.post(f"{T}/knowledge/vectorize", params=WAIT, json=body)
    assert status == 200 and done["status"] == "SUCCESS", done


async def delete(api: Api, **body: str) -> tuple[int, Any]:
    return await api.post(f"{T}/knowledge/delete", params=WAIT, json=body)


async def bases(api: Api, **params: str) -> dict[str, int]:
    status, body = await api.get(KB, params=params)
    assert status == 200 and KnowledgeBasesResponse().validate(body) == {}, body
    return {b["kb_id"]: b["documents"] for b in body["knowledge_bases"]}


async def documents(api: Api, kb: str, **params: str) -> dict[str, dict[str, Any]]:
    status, body = await api.get(f"{KB}/{kb}/documents", params=params)
    assert status == 200 and KnowledgeDocumentsResponse().validate(body) == {}, body
    assert body["kb_id"] == kb
    return {d["document_id"]: d for d in body["documents"]}


async def test_the_listings_show_the_callers_bases_and_documents_only(
    alice, bob, admin, worker
) -> None:
    shared, hers = new_kb(), new_kb()
    text = "Refunds are paid within 30 days of a return."
    await vectorize(alice, shared, "refunds", text, title="Refunds")
    await vectorize(alice, shared, "shipping", "Parcels ship on weekdays.")
    await vectorize(alice, hers, "vault", "The vault code is 7341.")
    await vectorize(bob, shared, "bobs", "Bob's notes.")  # the same kb id: his own base

    mine = await bases(alice)
    assert mine[shared] == 2 and mine[hers] == 1
    his = await bases(bob)
    assert his[shared] == 1 and hers not in his
    assert await bases(admin, owner="alice") == mine  # an admin may name the owner

    listed = await documents(alice, shared)
    assert set(listed) == {"refunds", "shipping"}
    refunds = listed["refunds"]
    assert refunds["title"] == "Refunds" and refunds["size"] == len(text)
    assert refunds["chunks"] == 1
    updated = datetime.fromisoformat(refunds["updated_at"])
    assert updated.utcoffset() == timedelta(0)
    assert set(await documents(bob, shared)) == {"bobs"}
    assert set(await documents(admin, shared, owner="alice")) == {"refunds", "shipping"}


async def test_another_owners_base_is_not_found_and_not_theirs_to_name(alice, bob, worker) -> None:
    hers = new_kb()
    await vectorize(alice, hers, "vault", "The vault code is 7341.")
    for path in (f"{KB}/{hers}/documents", f"{KB}/{new_kb()}/documents"):
        status, body = await bob.get(path)
        assert status == 404 and "kb_id" in body["details"], body
    status, body = await delete(bob, kb_id=hers)
    assert status == 404 and "kb_id" in body["details"], body
    # A user key may not name another owner.
    status, body = await bob.get(KB, params={"owner": "alice"})
    assert status == 403 and "owner" in body["details"], body
    assert set(await documents(alice, hers)) == {"vault"}  # untouched


async def test_deleting_a_document_then_the_base_updates_the_listings(alice, bob, worker) -> None:
    kb = new_kb()
    await vectorize(alice, kb, "one", "The first document.")
    await vectorize(alice, kb, "two", "The second document.")
    await vectorize(bob, kb, "his", "Bob's own base of that name.")
    status, done = await delete(alice, kb_id=kb, document_id="one")
    assert status == 200 and done["status"] == "SUCCESS", done
    assert done["result"]["removed_chunks"] == 1
    assert set(await documents(alice, kb)) == {"two"}
    assert (await bases(alice))[kb] == 1

    status, done = await delete(alice, kb_id=kb)
    assert status == 200 and done["result"]["removed_chunks"] == 1, done
    assert kb not in await bases(alice)
    status, body = await alice.get(f"{KB}/{kb}/documents")
    assert status == 404 and "kb_id" in body["details"], body
    assert set(await documents(bob, kb)) == {"his"}  # bob's base of that name stays


async def test_openapi_documents_the_listings_responses(admin) -> None:
    status, spec = await admin.get("/api/v1/openapi.json")
    assert status == 200
    schemas = spec["components"]["schemas"]
    for path, name in ((KB, "KnowledgeBasesResponse"),
                       (f"{KB}/{{kb_id}}/documents", "KnowledgeDocumentsResponse")):  # fmt: skip
        ok = spec["paths"][path]["get"]["responses"]["200"]
        assert ok["content"]["application/json"]["schema"]["$ref"].endswith(f"/{name}")
    assert set(schemas["KnowledgeDocument"]["properties"]) == {
        "document_id", "title", "chunks", "updated_at", "size"}  # fmt: skip
    assert set(schemas["KnowledgeBaseSummary"]["properties"]) == {"kb_id", "documents"}
    assert "404" in spec["paths"][f"{KB}/{{kb_id}}/documents"]["get"]["responses"]
