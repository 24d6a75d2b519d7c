"""Error rendering and authentication, each in one place."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import redis.exceptions
from aiohttp import web

from service.auth import DEVELOPMENT_PRINCIPAL, Principal
from service.errors import ApiError, ServiceUnavailable, Unauthorized
from service.keys import keyring_key

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

principal_key = "principal"
PUBLIC_PATHS = frozenset({"/healthz", "/login"})


def _json_error(status: int, body: dict, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return _json_error(exc.status, exc.body(), exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k.lower() in {"allow", "retry-after"}}
        return _json_error(exc.status, {"error": exc.reason.lower()}, headers)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        logger.warning("redis unavailable during %s %s: %s", request.method, request.path, exc)
        unavailable = ServiceUnavailable("task store unavailable, retry shortly")
        return _json_error(unavailable.status, unavailable.body(), unavailable.headers)
    except Exception:
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return _json_error(500, {"error": "internal error"})


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in PUBLIC_PATHS:
        return await handler(request)
    request[principal_key] = authenticate(request)
    return await handler(request)


def authenticate(request: web.Request) -> Principal:
    keyring = request.app[keyring_key]
    if not keyring.enabled:
        return DEVELOPMENT_PRINCIPAL
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized()
    principal = keyring.lookup(token.strip())
    if principal is None:
        raise Unauthorized()
    return principal


def principal_of(request: web.Request) -> Principal:
    return request[principal_key]
