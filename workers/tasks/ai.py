"""AI replies: a conversation turn answered by the chat model, grounded on a knowledge base.

The reply streams to the live feed chunk by chunk. Without OPENAI_API_KEY an offline
provider answers, labeled as such, from the knowledge base passages (or says plainly that
no model is configured), so the platform works end to end in development.

Conversations and knowledge bases belong to the task's owner (its `claw_owner` header, see
`workers.core.ownership`): a conversation's memory and grounding are read and written in that
owner's namespace only, so a conversation stays tied to a knowledge base of its owner.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any

from workers.ai.conversations import ConversationStore
from workers.ai.llm import ChatResult, cost_usd, openai_client, stream_chat
from workers.ai.usage import FirstTokenClock, TaskUsage, record_usage
from workers.celery_app import celery_app
from workers.core import queues
from workers.core.headers import OWNER_HEADER
from workers.core.ownership import task_owner
from workers.core.settings import Settings, get_settings
from workers.knowledge import indexing as knowledge
from workers.runtime.backend import REDIS_ERRORS
from workers.runtime.base import BaseTaskWithRetry
from workers.runtime.clients import redis_client
from workers.runtime.progress import publish_chunk, reset_output

logger = logging.getLogger(__name__)

OFFLINE_MODEL = "offline"
SYSTEM_PROMPT = "You are CLAW.AI, a helpful assistant. Answer concisely."
GROUNDING_PROMPT = (
    "Answer using the numbered passages from the knowledge base below when they are "
    "relevant, and cite them as [1], [2], ... If they do not contain the answer, say so.\n\n"
)
NO_MODEL_TEXT = (
    "No language model is configured (set OPENAI_API_KEY); this is the offline provider, "
    "and it can only answer from a knowledge base."
)
SNIPPET = 300


def retrieve_sources(
    client: Any, settings: Settings, owner: str | None, kb_id: str | None, question: str
) -> list[dict[str, Any]]:
    """The best-matching passages of `owner`'s knowledge base (none without one)."""
    if not kb_id:
        return []
    matches = knowledge.search(client, settings, owner, kb_id, question, settings.grounding_top_k)
    return [m for m in matches if m["score"] > 0]  # (and above KNOWLEDGE_MIN_SCORE)


def build_messages(
    history: list[dict[str, str]], sources: list[dict[str, Any]], question: str
) -> list[dict[str, str]]:
    system = SYSTEM_PROMPT
    if sources:
        passages = "\n\n".join(
            f"[{n}] {s['title'] or s['document_id']}: {s['text']}"
            for n, s in enumerate(sources, start=1)
        )
        system = f"{SYSTEM_PROMPT}\n\n{GROUNDING_PROMPT}{passages}"
    return [{"role": "system", "content": system}, *history, {"role": "user", "content": question}]


def offline_answer(sources: list[dict[str, Any]]) -> str:
    if not sources:
        return NO_MODEL_TEXT
    lines = [
        "Offline provider (no language model configured). "
        "The most relevant knowledge base passages:"
    ]
    lines += [
        f"[{n}] {s['title'] or s['document_id']}: {s['text'][:SNIPPET]}"
        for n, s in enumerate(sources, start=1)
    ]
    return "\n".join(lines)


def stream_offline(text: str, on_delta: Callable[[str], None], delay: float) -> None:
    """The offline answer as a model would send it: word by word, `delay` seconds apart,
    so streaming is visible (chat, SSE, websocket) without a model configured."""
    for n, token in enumerate(re.findall(r"\S+\s*|\s+", text)):
        if n and delay:
            time.sleep(delay)
        on_delta(token)


def source_refs(sources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "ref": n,
            "document_id": s["document_id"],
            "title": s["title"],
            "chunk_index": s["chunk_index"],
            "score": s["score"],
            "snippet": s["text"][:SNIPPET],
        }
        for n, s in enumerate(sources, start=1)
    ]


def generate_reply(
    client: Any,
    settings: Settings,
    *,
    owner: str | None,
    task_id: str | None,
    conversation_id: str,
    user_message: str,
    temperature: float = 0.7,
    model: str | None = None,
    max_tokens: int | None = None,
    knowledge_base_id: str | None = None,
    user_id: str | None = None,
    on_delta: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """One turn of `owner`'s conversation: context, grounding, the model's streamed reply,
    memory. `None` is the system namespace (tasks published without an owner).
    """
    conversations = ConversationStore(client, settings.conversation_ttl, owner)
    meta = conversations.meta(conversation_id)
    # A conversation stays tied to the knowledge base it was first given.
    kb_id = knowledge_base_id or meta.get("kb_id")
    conversations.set_meta(conversation_id, kb_id=kb_id or "", user_id=user_id or "")
    sources = retrieve_sources(client, settings, owner, kb_id, user_message)
    history = conversations.context(
        conversation_id, settings.conversation_max_turns, settings.conversation_max_tokens
    )

    offline = settings.openai_api_key is None or not settings.openai_api_key.get_secret_value()
    clock = FirstTokenClock(on_delta)  # started now: time to first token from here
    if offline:
        text = offline_answer(sources)
        stream_offline(text, clock, settings.offline_token_delay)
        result = ChatResult(text, OFFLINE_MODEL, 0, 0, "stop")
    else:
        result = stream_chat(
            openai_client(settings),
            model=model or settings.openai_model,
            messages=build_messages(history, sources, user_message),
            temperature=temperature,
            max_tokens=max_tokens,
            on_delta=clock,
        )

    cost = 0.0 if offline else cost_usd(
        settings.model_prices, result.model, result.prompt_tokens, result.completion_tokens
    )  # fmt: skip
    if result.text:
        conversations.append_turn(
            conversation_id, task_id, user_message, result.text, model=result.model
        )
    return {
        "conversation_id": conversation_id,
        "response": result.text,
        "tokens": {
            "prompt": result.prompt_tokens,
            "completion": result.completion_tokens,
            "total": result.prompt_tokens + result.completion_tokens,
        },
        "cost": cost or 0.0,
        "priced": cost is not None,
        "model": result.model,
        "provider": OFFLINE_MODEL if offline else "openai",
        "offline": offline,
        "sources": source_refs(sources),
        "knowledge_base_id": kb_id,
        "finish_reason": result.finish_reason,
        "tokens_estimated": result.usage_estimated,
        "context_messages": len(history),
        "ttft_ms": clock.ttft_ms,
    }


@celery_app.task(
    name=queues.GENERATE_AI_RESPONSE,
    base=BaseTaskWithRetry,
    bind=True,
    rate_limit="10/m",
    global_rate_setting="ai_rate_limit",
)
def generate_ai_response(
    self: Any,
    conversation_id: str,
    user_message: str,
    user_id: str | None = None,
    temperature: float = 0.7,
    model: str | None = None,
    max_tokens: int | None = None,
    knowledge_base_id: str | None = None,
    owner: str | None = None,
) -> dict[str, Any]:
    """Answer `user_message` in `conversation_id`, streaming the reply to the live feed.

    The conversation and knowledge base are the task owner's; `owner` names another
    owner's, for trusted publishers (the gateway passes it for admin keys only).
    """
    task_id = self.request.id
    if task_id and self.request.retries:
        # A retried attempt streams the reply again from the start: drop the earlier
        # attempt's partial output so watchers do not see it twice.
        reset_output(task_id)

    def on_delta(text: str) -> None:
        if task_id:
            publish_chunk(task_id, text)

    client, settings = redis_client(), get_settings()
    result = generate_reply(
        client, settings, owner=task_owner(self.request, owner),
        task_id=task_id, conversation_id=conversation_id,
        user_message=user_message, temperature=temperature, model=model,
        max_tokens=max_tokens, knowledge_base_id=knowledge_base_id, user_id=user_id,
        on_delta=on_delta,
    )  # fmt: skip
    # Counted for the submitter (whose key pays), also when an admin's task names `owner`.
    submitter = self.request.get(OWNER_HEADER) or None
    try:
        record_usage(client, settings, task_id, submitter, TaskUsage.from_result(result))
    except REDIS_ERRORS:
        # The reply is paid for and done: a retry for the accounting would ask (and pay)
        # the provider again. The usage of this run goes uncounted; said in the log.
        logger.exception("usage of task %s not recorded", task_id)
    return result
