"""A client of the CLAW.AI task platform's HTTP API (sync and async) and its CLI."""

from claw_client._async import AsyncClawClient
from claw_client._sync import ClawClient
from claw_client.errors import (
    BadRequest,
    ClawConnectionError,
    ClawError,
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    ServerError,
    Unauthorized,
    WebhookVerificationError,
)
from claw_client.sse import TERMINAL_STATES, Event
from claw_client.webhooks import verify_webhook

__all__ = [
    "TERMINAL_STATES", "AsyncClawClient", "BadRequest", "ClawClient", "ClawConnectionError",
    "ClawError", "Conflict", "Event", "Forbidden", "NotFound", "RateLimited", "ServerError",
    "Unauthorized", "WebhookVerificationError", "verify_webhook",
]  # fmt: skip
