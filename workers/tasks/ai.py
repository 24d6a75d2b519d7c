"""AI replies. The OpenAI-backed implementation arrives with issue #5."""

from __future__ import annotations

from typing import Any

from workers import queues
from workers.base import BaseTaskWithRetry
from workers.celery_app import celery_app
from workers.settings import get_settings

OFFLINE_MODEL = "offline"


def offline_reply(conversation_id: str, user_message: str) -> dict[str, Any]:
    """The answer when no model is configured: says so plainly, costs nothing."""
    text = "No language model is configured (set OPENAI_API_KEY); this is the offline provider."
    return {
        "conversation_id": conversation_id,
        "response": text,
        "tokens": {"prompt": 0, "completion": 0, "total": 0},
        "cost": 0.0,
        "model": OFFLINE_MODEL,
        "offline": True,
        "sources": [],
    }


@celery_app.task(
    name=queues.GENERATE_AI_RESPONSE,
    base=BaseTaskWithRetry,
    bind=True,
    rate_limit="10/m",
)
def generate_ai_response(
    self: Any,
    conversation_id: str,
    user_message: str,
    user_id: str | None = None,
    temperature: float = 0.7,
    model: str | None = None,
    max_tokens: int | None = None,
) -> dict[str, Any]:
    if get_settings().openai_api_key is None:
        return offline_reply(conversation_id, user_message)
    raise NotImplementedError("OpenAI provider: issue #5")
