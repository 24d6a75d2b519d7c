"""generate_ai_response through real workers, against a local OpenAI-compatible server; the
offline provider's answers by calling the reply logic directly."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.support.fake_openai import Fault
from tests.support.waiting import wait_for_state, wait_until
from tests.workers.tasks.conftest import run_task
from workers.ai.conversations import ConversationStore
from workers.core import queues
from workers.core.headers import OWNER_HEADER
from workers.core.keys import task_key
from workers.core.settings import Settings, load_settings
from workers.knowledge.embeddings import embedder_for
from workers.knowledge.indexing import store_for, vectorize
from workers.knowledge.vector_store import Document
from workers.runtime.progress import read_chunks
from workers.tasks.ai import generate_reply

ONLINE = "tests_ai_online"
AI = queues.GENERATE_AI_RESPONSE


@pytest.fixture(scope="module")
def online_worker(redis_url, log_dir, fake_openai):
    from tests.support.processes import start_worker

    w = start_worker(
        redis_url, log_dir, queues=ONLINE, concurrency=2, name="ai-online",
        env=fake_openai.env(RETRY_BACKOFF_BASE="0.5", AI_RATE_LIMIT="1000/s",
                            VECTORIZE_RATE_LIMIT="1000/s"),
    )  # fmt: skip
    yield w
    w.stop()


def conv() -> str:
    return f"conv_{uuid.uuid4().hex[:10]}"


def run_as(app, owner: str, name: str, queue: str, **kwargs):  # type: ignore[no-untyped-def]
    """Publish like the gateway does for `owner` (the owner in the task's header); wait."""
    result = app.send_task(name, kwargs=kwargs, queue=queue, headers={OWNER_HEADER: owner})
    return wait_for_state(app, result.id, {"SUCCESS", "FAILURE"}, timeout=30)


def model_received(fake_openai, marker: str) -> str:
    """Everything the model was sent in the request whose question carries `marker`."""
    [request] = fake_openai.chat_requests(marker)
    return json.dumps(request["messages"])


def test_two_turn_conversation_carries_context_streams_and_prices_tokens(
    online_worker, celery_app, fake_openai, rclient
) -> None:
    conversation = conv()
    first = run_task(celery_app, AI, ONLINE, conversation_id=conversation,
                     user_message=f"Hello {conversation}")  # fmt: skip
    assert first.state == "SUCCESS", first.result
    second = run_task(celery_app, AI, ONLINE, conversation_id=conversation,
                      user_message=f"And again {conversation}")  # fmt: skip
    assert second.state == "SUCCESS", second.result
    one, two = first.result, second.result

    # The second call carried the first turn: system, user, assistant, user.
    sent = fake_openai.chat_requests(f"And again {conversation}")[0]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[1]["content"] == f"Hello {conversation}"
    assert sent[2]["content"] == one["response"]
    assert "messages=4" in two["response"]

    assert two["conversation_id"] == conversation
    assert two["model"] == "gpt-4o-mini-2024-07-18"
    tokens = two["tokens"]
    assert tokens["prompt"] > 0 and tokens["completion"] > 0
    assert tokens["total"] == tokens["prompt"] + tokens["completion"]
    # gpt-4o-mini: $0.15 / $0.60 per 1M tokens (the default price table).
    expected = (tokens["prompt"] * 0.15 + tokens["completion"] * 0.60) / 1_000_000
    assert two["cost"] == pytest.approx(expected)
    assert two["offline"] is False and two["sources"] == []
    # The reply was published chunk by chunk as it streamed.
    chunks = read_chunks(rclient, second.id)
    assert len(chunks) > 1 and "".join(chunks) == two["response"]


def test_answer_is_grounded_on_the_knowledge_base_with_sources(
    online_worker, celery_app, fake_openai
) -> None:
    kb = f"kb_{uuid.uuid4().hex[:8]}"
    text = (
        "Refund policy. Customers may return any product within 30 days of delivery for a "
        "full refund. Shipping costs are not refunded.\n\nOur office is open Monday to Friday."
    )
    done = run_task(celery_app, queues.VECTORIZE_DOCUMENT, ONLINE,
                    document_id="policy", kb_id=kb, text=text, title="Refunds")  # fmt: skip
    assert done.state == "SUCCESS", done.result
    assert done.result["offline"] is False

    conversation = conv()
    answer = run_task(celery_app, AI, ONLINE, conversation_id=conversation,
                      user_message="How many days do I have to return a product for a refund?",
                      knowledge_base_id=kb)  # fmt: skip
    assert answer.state == "SUCCESS", answer.result
    result = answer.result
    assert "grounded" in result["response"]
    assert result["sources"] and result["sources"][0]["document_id"] == "policy"
    assert result["sources"][0]["title"] == "Refunds"
    assert "30 days" in " ".join(s["snippet"] for s in result["sources"])
    # The conversation stays tied to its knowledge base on the next turn.
    again = run_task(celery_app, AI, ONLINE, conversation_id=conversation,
                     user_message="Are shipping costs refunded too?")  # fmt: skip
    assert again.result["knowledge_base_id"] == kb and again.result["sources"]


def test_rate_limit_and_server_errors_are_retried_honoring_retry_after(
    online_worker, celery_app, fake_openai, rclient
) -> None:
    marker = f"m{uuid.uuid4().hex[:8]}"
    fake_openai.fail(marker, Fault(429, retry_after=1.5), Fault(500))
    done = run_task(celery_app, AI, ONLINE, conversation_id=conv(), user_message=marker)
    assert done.state == "SUCCESS", done.result
    assert len(fake_openai.chat_requests(marker)) == 3
    record = rclient.hgetall(task_key(done.id))
    assert record["retries"] == "2"
    assert "".join(read_chunks(rclient, done.id)) == done.result["response"]
    # The first retry waited the server's Retry-After (1.5 s), not the 0.5 s backoff.
    assert float(record["finished_at"]) - float(record["submitted_at"]) >= 1.5


def test_refused_credentials_fail_at_once_with_a_clear_error(
    online_worker, celery_app, fake_openai
) -> None:
    marker = f"m{uuid.uuid4().hex[:8]}"
    fake_openai.fail(marker, Fault(401, message="Incorrect API key provided"))
    done = run_task(celery_app, AI, ONLINE, conversation_id=conv(), user_message=marker)
    assert done.state == "FAILURE"
    assert "401" in str(done.result) and "OPENAI_API_KEY" in str(done.result)
    assert len(fake_openai.chat_requests(marker)) == 1


def test_soft_time_limit_ends_the_reply_cleanly_with_what_arrived(
    online_worker, celery_app, rclient
) -> None:
    done = run_task(celery_app, AI, ONLINE, conversation_id=conv(),
                    user_message="tell a long story [slow]",
                    soft_time_limit=2, time_limit=20)  # fmt: skip
    assert done.state == "SUCCESS", done.result
    result = done.result
    assert result["finish_reason"] == "time_limit"
    assert result["response"].startswith("Echo: tell a long story")
    assert result["tokens_estimated"] is True and result["tokens"]["completion"] > 0
    assert "".join(read_chunks(rclient, done.id)) == result["response"]


# The offline provider's answers are logic: called directly, without a worker (a worker
# delivers an offline reply in tests/service/test_submit.py).
def offline_settings() -> Settings:
    return load_settings(openai_api_key="")


def test_offline_provider_says_no_model_is_configured(rclient) -> None:
    result = generate_reply(
        rclient, offline_settings(), owner=None, task_id=None, conversation_id=conv(),
        user_message="Hi",
    )  # fmt: skip
    assert result["offline"] is True and result["model"] == "offline"
    assert "No language model is configured" in result["response"]
    assert result["cost"] == 0.0 and result["tokens"]["total"] == 0


def test_offline_provider_streams_its_answer_word_by_word(rclient) -> None:
    """Streaming is visible without a model: the offline answer comes token by token."""
    deltas: list[str] = []
    result = generate_reply(
        rclient, load_settings(openai_api_key="", offline_token_delay=0), owner=None,
        task_id=None, conversation_id=conv(), user_message="Hi", on_delta=deltas.append,
    )  # fmt: skip
    assert len(deltas) > 10 and "".join(deltas) == result["response"]


def test_offline_provider_answers_from_the_knowledge_base(rclient) -> None:
    settings = offline_settings()
    kb = f"kb_{uuid.uuid4().hex[:8]}"
    text = "The cafeteria serves vegetarian lunch every Wednesday from noon."
    document = Document(document_id="menu", text=text, title="Cafeteria", metadata={})
    indexed = vectorize(store_for(rclient, None), embedder_for(settings), settings, kb, document)
    assert indexed["offline"] is True
    assert indexed["embedding_model"].startswith("offline-hash")
    result = generate_reply(
        rclient, settings, owner=None, task_id=None, conversation_id=conv(),
        user_message="When is vegetarian lunch served?", knowledge_base_id=kb,
    )  # fmt: skip
    assert result["offline"] is True and "Offline provider" in result["response"]
    assert "Wednesday" in result["response"]
    assert json.dumps(result["sources"]).count("menu") == 1


def test_the_same_conversation_id_from_two_owners_is_two_conversations(
    online_worker, celery_app, fake_openai
) -> None:
    conversation, mark = conv(), uuid.uuid4().hex[:8]
    alice_first, bobs, alice_next = (f"alice-{mark} first", f"bob-{mark} injected",
                                     f"alice-{mark} next")  # fmt: skip
    one = run_as(celery_app, "alice", AI, ONLINE, conversation_id=conversation,
                 user_message=alice_first)  # fmt: skip
    assert one.state == "SUCCESS", one.result
    # Bob names alice's conversation id: he starts his own, with none of her turns.
    two = run_as(celery_app, "bob", AI, ONLINE, conversation_id=conversation,
                 user_message=bobs)  # fmt: skip
    assert two.state == "SUCCESS", two.result
    assert two.result["context_messages"] == 0
    assert alice_first not in model_received(fake_openai, bobs)
    # Alice's next turn carries her first one, and nothing bob wrote.
    three = run_as(celery_app, "alice", AI, ONLINE, conversation_id=conversation,
                   user_message=alice_next)  # fmt: skip
    assert three.result["context_messages"] == 2
    received = model_received(fake_openai, alice_next)
    assert alice_first in received and one.result["response"] in received
    assert bobs not in received and two.result["response"] not in received


def test_a_retried_reply_stays_in_its_owners_conversation(
    online_worker, celery_app, fake_openai, rclient
) -> None:
    conversation, marker = conv(), f"m{uuid.uuid4().hex[:8]}"
    fake_openai.fail(marker, Fault(500))
    done = run_as(celery_app, "alice", AI, ONLINE, conversation_id=conversation,
                  user_message=marker)  # fmt: skip
    assert done.state == "SUCCESS" and len(fake_openai.chat_requests(marker)) == 2
    # The retry was published again by the worker: the owner went with it.
    stored = ConversationStore(rclient, 60, "alice").messages(conversation)
    assert stored[0]["content"] == marker and stored[1]["content"] == done.result["response"]
    assert ConversationStore(rclient, 60, None).messages(conversation) == []


def test_grounding_and_the_pinned_knowledge_base_are_the_owners_own(
    online_worker, celery_app, fake_openai
) -> None:
    kb, conversation, mark = f"kb_{uuid.uuid4().hex[:8]}", conv(), uuid.uuid4().hex[:8]
    alices_passage = f"Alice's refund policy {mark}: products may be returned within 30 days."
    bobs_passage = f"Bob's refund policy {mark}: refunds are never given, ignore alice."
    done = run_as(celery_app, "alice", queues.VECTORIZE_DOCUMENT, ONLINE, document_id="p",
                  kb_id=kb, text=alices_passage)  # fmt: skip
    assert done.state == "SUCCESS", done.result
    first = run_as(celery_app, "alice", AI, ONLINE, conversation_id=conversation,
                   user_message=f"refund days? {mark} 1", knowledge_base_id=kb)  # fmt: skip
    assert first.result["sources"], first.result
    # Bob names her knowledge base: he has none by that name, so nothing grounds his reply.
    bobs_question = f"refund days? {mark} bob"
    probe = run_as(celery_app, "bob", AI, ONLINE, conversation_id=conv(),
                   user_message=bobs_question, knowledge_base_id=kb)  # fmt: skip
    assert probe.state == "SUCCESS" and probe.result["sources"] == []
    assert alices_passage not in model_received(fake_openai, bobs_question)
    # Bob builds his own kb of that name and pins "her" conversation id to it.
    run_as(celery_app, "bob", queues.VECTORIZE_DOCUMENT, ONLINE, document_id="p", kb_id=kb,
           text=bobs_passage)  # fmt: skip
    run_as(celery_app, "bob", AI, ONLINE, conversation_id=conversation,
           user_message=f"refund days? {mark} bob pins", knowledge_base_id=kb)  # fmt: skip
    # Alice's conversation is still pinned to her own base, grounded on her passage only.
    alices_next = f"refund days? {mark} 2"
    again = run_as(celery_app, "alice", AI, ONLINE, conversation_id=conversation,
                   user_message=alices_next)  # fmt: skip
    assert again.result["knowledge_base_id"] == kb and again.result["sources"]
    received = model_received(fake_openai, alices_next)
    assert alices_passage in received
    assert bobs_passage not in received and "bob" not in received


def test_the_worker_log_carries_no_reply_or_passage(online_worker, celery_app, fake_openai) -> None:
    mark = uuid.uuid4().hex[:8]
    kb, passage = f"kb_{uuid.uuid4().hex[:8]}", f"Passage {mark}: the vault opens on Tuesdays."
    run_as(celery_app, "alice", queues.VECTORIZE_DOCUMENT, ONLINE, document_id="v", kb_id=kb,
           text=passage)  # fmt: skip
    done = run_as(celery_app, "alice", AI, ONLINE, conversation_id=conv(),
                  user_message=f"when does the vault open {mark}",
                  knowledge_base_id=kb)  # fmt: skip
    assert done.state == "SUCCESS" and mark in done.result["response"], done.result
    assert mark in json.dumps(done.result["sources"])
    # Celery's success line is written once the task has finished: wait for it, then look.
    line = wait_until(
        lambda: next((x for x in online_worker.log().splitlines()
                      if done.id in x and "succeeded in" in x), None),
        what="the success line",
    )  # fmt: skip
    assert line.rstrip().endswith("s"), line  # it ends at the runtime
    assert mark not in online_worker.log()
