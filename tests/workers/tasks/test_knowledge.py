"""Knowledge base tasks through real workers, and the search API through the gateway
(in-process)."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest

from tests.support.waiting import wait_for_state
from tests.workers.tasks.conftest import run_task
from workers.core import queues
from workers.core.headers import OWNER_HEADER
from workers.core.keys import FEED_STREAM, docs_key, kb_prefix
from workers.core.settings import load_settings
from workers.knowledge.embeddings import embedder_for, min_score
from workers.knowledge.indexing import store_for, vectorize
from workers.knowledge.vector_store import Document, RedisVectorStore

QUEUE = "tests_knowledge"
# The owner of the development gateway's principal (no API keys): the search API reads
# that owner's knowledge bases, so the round trip vectorizes for it.
DEV = "dev"
SETTINGS = {
    "OPENAI_API_KEY": "", "CHUNK_SIZE": "120", "CHUNK_OVERLAP": "30",
    "EMBEDDING_BATCH_SIZE": "2", "VECTORIZE_RATE_LIMIT": "1000/s",
}  # fmt: skip

TOPICS = [
    "Solar panels convert sunlight into electricity using photovoltaic cells on the roof.",
    "The espresso machine needs descaling every month with citric acid and warm water.",
    "Our hiking club meets on Saturday mornings at the trailhead near the old mill.",
    "Quarterly taxes are due in April, June, September and January for freelancers.",
    "The library lends telescopes to members for two weeks at a time, free of charge.",
]


@pytest.fixture(scope="module")
def kb_worker(redis_url, log_dir):
    from tests.support.processes import start_worker

    w = start_worker(redis_url, log_dir, queues=QUEUE, concurrency=2, name="knowledge",
                     env=SETTINGS)  # fmt: skip
    yield w
    w.stop()


@pytest.fixture
async def kb_gateway(serve_gateway):
    """The gateway (in-process), offline like the worker: it embeds the search queries."""
    return await serve_gateway(env={"OPENAI_API_KEY": ""})


def new_kb() -> str:
    return f"kb_{uuid.uuid4().hex[:8]}"


def progress_events(rclient, task_id: str, since_ms: int) -> list[dict]:
    events = [json.loads(f["event"]) for _, f in rclient.xrange(FEED_STREAM, f"{since_ms}-0", "+")]
    return [e for e in events if e.get("task_id") == task_id and e["type"] == "progress"]


async def search(gateway, kb: str, q: str, k: int = 3) -> tuple[int, dict]:
    response = await gateway.client.get(f"/api/v1/knowledge/{kb}/search", params={"q": q, "k": k})
    return response.status, await response.json()


async def test_vectorize_search_delete_round_trip_with_progress_per_batch(
    kb_worker, kb_gateway, celery_app, rclient
) -> None:
    kb = new_kb()
    since = int(time.time() * 1000) - 1
    done = run_task(celery_app, queues.VECTORIZE_DOCUMENT, QUEUE, document_id="guide",
                    kb_id=kb, text="\n\n".join(TOPICS), title="Guide",
                    metadata={"lang": "en"}, owner=DEV)  # fmt: skip
    assert done.state == "SUCCESS", done.result
    result = done.result
    assert result["chunks"] >= 5 and result["offline"] is True
    assert result["batches"] == -(-result["chunks"] // 2)
    events = progress_events(rclient, done.id, since)
    percents = [e["percent"] for e in events]
    assert len(events) == result["batches"] + 1  # one per batch, one when stored
    assert percents == sorted(percents) and percents[-1] == 100.0
    assert "batch 1 of" in events[0]["message"]

    status, body = await search(kb_gateway, kb, "when do freelancers pay quarterly taxes", k=2)
    assert status == 200, body
    assert len(body["results"]) == 2
    best = body["results"][0]
    assert "Quarterly taxes" in best["text"]
    assert best["document_id"] == "guide" and best["title"] == "Guide"
    assert best["metadata"] == {"lang": "en"}
    assert best["score"] >= body["results"][1]["score"]

    gone = run_task(celery_app, queues.DELETE_KNOWLEDGE_VECTORS, QUEUE, kb_id=kb,
                    document_id="guide", owner=DEV)  # fmt: skip
    assert gone.result["removed_chunks"] == result["chunks"]
    # Its last document gone, the knowledge base is gone too.
    status, body = await search(kb_gateway, kb, "taxes")
    assert status == 404 and "kb_id" in body["details"], body
    # Deleting again is fine: nothing left to remove.
    again = run_task(celery_app, queues.DELETE_KNOWLEDGE_VECTORS, QUEUE, kb_id=kb,
                     document_id="guide", owner=DEV)  # fmt: skip
    assert again.state == "SUCCESS" and again.result["removed_chunks"] == 0


# A document of several 800-character chunks (the default CHUNK_SIZE).
HANDBOOK = "\n\n".join([
    "Solar panels convert sunlight into electricity using photovoltaic cells on the roof; "
    "the inverter in the basement turns their direct current into household power.",
    "The espresso machine needs descaling every month with citric acid and warm water. "
    "Run two empty cycles afterwards so that the coffee does not taste sour.",
    "Our hiking club meets on Saturday mornings at the trailhead near the old mill. "
    "Bring sturdy boots, a rain jacket and enough drinking water for six hours.",
    "Quarterly taxes are due in April, June, September and January for freelancers. "
    "Late payments are charged interest from the day after the deadline.",
    "The library lends telescopes to members for two weeks at a time, free of charge. "
    "A short introduction to the night sky is held on the first Friday of each month.",
    "Bicycles may be parked in the courtyard racks; the gate code changes every quarter "
    "and is posted on the notice board beside the mailboxes.",
    "Recycling is collected on Tuesdays: paper in the blue bins, glass in the green ones, "
    "and batteries go into the small box at the reception desk.",
])  # fmt: skip


async def test_with_default_settings_nonsense_finds_nothing_and_a_related_query_its_document(
    kb_gateway, rclient
) -> None:
    """Default settings, so the offline embedder and its default floor: its hashed
    scores put nonsense above 0 ("qwfp zxcv" scored 0.08 against this document), so only
    passages sharing a word, or a form of one, with the query match."""
    settings = load_settings(openai_api_key="")
    assert settings.knowledge_min_score is None  # the embedder's own floor
    kb = new_kb()
    document = Document(document_id="handbook", text=HANDBOOK, title="Handbook", metadata={})
    indexed = vectorize(store_for(rclient, DEV), embedder_for(settings), settings, kb, document)
    assert indexed["offline"] is True and indexed["chunks"] >= 2
    for nonsense in ("qwfp zxcv", "blorft snargle vimmix", "xyzzy plugh", "zorp quux wibble"):
        status, body = await search(kb_gateway, kb, nonsense, k=5)
        assert status == 200 and body["results"] == [], (nonsense, body)
    for query, passage in (("how often must the espresso machine be descaled", "espresso"),
                           ("when are quarterly taxes due", "Quarterly taxes"),
                           ("telescope", "telescopes")):  # fmt: skip
        status, body = await search(kb_gateway, kb, query, k=5)
        assert status == 200, body
        assert body["results"] and {r["document_id"] for r in body["results"]} == {"handbook"}
        assert any(passage in r["text"] for r in body["results"]), (query, body)
        assert all(r["score"] > 0 for r in body["results"])


def test_the_relevance_floor_is_the_embedders_own_unless_set() -> None:
    offline = load_settings(openai_api_key="")
    online = load_settings(openai_api_key="sk-test", openai_base_url="http://127.0.0.1:9/v1")
    assert min_score(offline, embedder_for(offline)) == 0.0
    assert min_score(online, embedder_for(online)) == 0.25  # OpenAI's text-embedding-3-*
    for settings in (offline, online):
        chosen = settings.model_copy(update={"knowledge_min_score": 0.4})
        assert min_score(chosen, embedder_for(chosen)) == 0.4
    # KNOWLEDGE_MIN_SCORE= (empty, as in .env.example) is unset, not an error.
    assert load_settings(knowledge_min_score="").knowledge_min_score is None


async def test_search_validates_its_query(kb_gateway) -> None:
    status, body = await search(kb_gateway, new_kb(), "x", k=500)
    assert status == 400 and "k" in body["details"]


async def test_search_of_a_knowledge_base_the_owner_does_not_have_is_404(
    kb_worker, kb_gateway, celery_app
) -> None:
    kb = new_kb()
    # The same kb id in the system namespace (a task published without an owner) is not
    # the development owner's.
    done = run_task(celery_app, queues.VECTORIZE_DOCUMENT, QUEUE, document_id="d", kb_id=kb,
                    text=TOPICS[0])  # fmt: skip
    assert done.state == "SUCCESS", done.result
    status, body = await search(kb_gateway, kb, "solar panels")
    assert status == 404 and "kb_id" in body["details"], body


def test_revectorizing_replaces_a_document_atomically_for_readers(
    kb_worker, celery_app, rclient
) -> None:
    kb = new_kb()
    store = RedisVectorStore(rclient, None)
    # Versions of different sizes: a half-written one would show a mix or a wrong count.
    versions = {n: " ".join([f"version{n} sentence number {i}." for i in range(6 * n)])
                for n in (1, 2, 3)}  # fmt: skip
    first = run_task(celery_app, queues.VECTORIZE_DOCUMENT, QUEUE, document_id="doc",
                     kb_id=kb, text=versions[1])  # fmt: skip
    counts = {1: first.result["chunks"]}
    seen: list[tuple[set[str], int]] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            matches = store.search(kb, [1.0] + [0.0] * 255, 1000)
            seen.append(({m.text.split()[0] for m in matches}, len(matches)))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for n in (2, 3, 2, 3):
            done = run_task(celery_app, queues.VECTORIZE_DOCUMENT, QUEUE, document_id="doc",
                            kb_id=kb, text=versions[n])  # fmt: skip
            counts[n] = done.result["chunks"]
    finally:
        stop.set()
        reader.join()
    assert len(seen) > 10
    for words, total in seen:
        assert len(words) == 1, words  # never a mix of versions
        version = int(next(iter(words)).removeprefix("version"))
        assert total == counts[version]  # never a partial document
    # Old versions are gone: one version key per document.
    assert len(rclient.keys(f"{kb_prefix(None, kb)}ver:*")) == 1


def test_update_knowledge_base_reembeds_every_document_with_progress(
    kb_worker, celery_app, rclient
) -> None:
    kb = new_kb()
    for i, topic in enumerate(TOPICS[:3]):
        run_task(celery_app, queues.VECTORIZE_DOCUMENT, QUEUE, document_id=f"d{i}", kb_id=kb,
                 text=topic)  # fmt: skip
    before = {d.document_id: d.updated_at for d in RedisVectorStore(rclient, None).documents(kb)}
    since = int(time.time() * 1000) - 1
    done = run_task(celery_app, queues.UPDATE_KNOWLEDGE_BASE, QUEUE, kb_id=kb)
    assert done.state == "SUCCESS", done.result
    assert done.result["documents"] == 3 and done.result["chunks"] >= 3
    after = {d.document_id: d.updated_at for d in RedisVectorStore(rclient, None).documents(kb)}
    assert set(after) == set(before) and all(after[d] > before[d] for d in before)
    percents = [e["percent"] for e in progress_events(rclient, done.id, since)]
    assert percents == sorted(percents) and percents[-1] == 100.0 and len(percents) >= 4


def test_deleting_a_whole_knowledge_base_is_idempotent(kb_worker, celery_app, rclient) -> None:
    kb = new_kb()
    for i, topic in enumerate(TOPICS[:2]):
        run_task(celery_app, queues.VECTORIZE_DOCUMENT, QUEUE, document_id=f"d{i}", kb_id=kb,
                 text=topic)  # fmt: skip
    first = run_task(celery_app, queues.DELETE_KNOWLEDGE_VECTORS, QUEUE, kb_id=kb)
    assert first.result["removed_chunks"] >= 2
    assert not rclient.exists(docs_key(None, kb)) and not rclient.keys(f"{kb_prefix(None, kb)}*")
    second = run_task(celery_app, queues.DELETE_KNOWLEDGE_VECTORS, QUEUE, kb_id=kb)
    assert second.state == "SUCCESS" and second.result["removed_chunks"] == 0


def send_as(celery_app, header_owner: str, name: str, **kwargs):  # type: ignore[no-untyped-def]
    """Publish like the gateway does: the task's owner in its header."""
    headers = {OWNER_HEADER: header_owner}
    result = celery_app.send_task(name, kwargs=kwargs, queue=QUEUE, headers=headers)
    return wait_for_state(celery_app, result.id, {"SUCCESS", "FAILURE"}, timeout=30)


def test_the_same_kb_and_document_ids_from_two_owners_are_two_knowledge_bases(
    kb_worker, celery_app, rclient
) -> None:
    kb = new_kb()
    alice = send_as(celery_app, "alice", queues.VECTORIZE_DOCUMENT, document_id="doc",
                    kb_id=kb, text=TOPICS[1])  # fmt: skip
    bob = send_as(celery_app, "bob", queues.VECTORIZE_DOCUMENT, document_id="doc",
                  kb_id=kb, text=TOPICS[2])  # fmt: skip
    assert alice.state == bob.state == "SUCCESS", (alice.result, bob.result)
    # Bob's document did not replace alice's: each owner has its own.
    [alices] = RedisVectorStore(rclient, "alice").documents(kb)
    [bobs] = RedisVectorStore(rclient, "bob").documents(kb)
    assert alices.text == TOPICS[1] and bobs.text == TOPICS[2]
    # Bob re-embeds and then deletes "his" kb: alice's is untouched.
    before = alices.updated_at
    assert send_as(celery_app, "bob", queues.UPDATE_KNOWLEDGE_BASE, kb_id=kb).state == "SUCCESS"
    gone = send_as(celery_app, "bob", queues.DELETE_KNOWLEDGE_VECTORS, kb_id=kb)
    assert gone.state == "SUCCESS" and gone.result["removed_chunks"] == 1
    assert RedisVectorStore(rclient, "bob").documents(kb) == []
    [still] = RedisVectorStore(rclient, "alice").documents(kb)
    assert still.text == TOPICS[1] and still.updated_at == before
    # An explicit owner (what the gateway passes for an admin key) acts on that owner's.
    gone = send_as(celery_app, "ops", queues.DELETE_KNOWLEDGE_VECTORS, kb_id=kb, owner="alice")
    assert gone.result["removed_chunks"] == 1
    assert not rclient.exists(docs_key("alice", kb))
