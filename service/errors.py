"""JSON API errors: raise a subclass; the error middleware renders it."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    status = 500
    message = "internal error"

    def __init__(
        self,
        message: str | None = None,
        *,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message or self.message)
        self.message = message or self.message
        self.details = details
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message}
        if self.details is not None:
            body["details"] = self.details
        return body


class BadRequest(ApiError):
    status = 400
    message = "bad request"


class Unauthorized(ApiError):
    status = 401
    message = "missing or invalid API key"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer realm="claw"'})


class Forbidden(ApiError):
    status = 403
    message = "forbidden"


class NotFound(ApiError):
    status = 404
    message = "not found"


class Conflict(ApiError):
    status = 409
    message = "conflict"


class Unprocessable(ApiError):
    status = 422
    message = "unprocessable request"


class ServiceUnavailable(ApiError):
    status = 503
    message = "service temporarily unavailable"

    def __init__(self, message: str | None = None, *, retry_after: int = 2) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})
