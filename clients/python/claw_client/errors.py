"""The client's exceptions: one per kind of API answer, each carrying the error body."""

from __future__ import annotations

from typing import Any


class ClawError(Exception):
    """An error answer of the API: `status`, and `body` ({"error", "details"})."""

    def __init__(self, status: int, body: Any, retry_after: float | None = None) -> None:
        self.status = status
        self.body = body
        self.retry_after = retry_after
        self.message = body.get("error", "") if isinstance(body, dict) else str(body)
        self.details = body.get("details") if isinstance(body, dict) else None
        super().__init__(f"{status}: {self.message}" + (f" {self.details}" if self.details else ""))


class BadRequest(ClawError):
    """400 or 422: `details` names each bad field."""


class Unauthorized(ClawError):
    """401: no API key, or an unknown one."""


class Forbidden(ClawError):
    """403."""


class NotFound(ClawError):
    """404: no such task (or not the key's)."""


class Conflict(ClawError):
    """409: not possible in the task's current state."""


class RateLimited(ClawError):
    """429: `retry_after` seconds."""


class ServerError(ClawError):
    """5xx (503 when Redis is unavailable: `retry_after`)."""


class ClawConnectionError(Exception):
    """The gateway could not be reached (or the connection broke)."""


class WebhookVerificationError(Exception):
    """A webhook whose signature or timestamp does not verify."""


BY_STATUS: dict[int, type[ClawError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict,
    422: BadRequest, 429: RateLimited,
}  # fmt: skip


def error_for(status: int, body: Any, retry_after: str | None) -> ClawError:
    kind = BY_STATUS.get(status, ServerError if status >= 500 else ClawError)
    try:
        after = float(retry_after) if retry_after is not None else None
    except ValueError:
        after = None
    return kind(status, body, after)
