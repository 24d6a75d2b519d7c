"""Error rendering and authentication, each in one place."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import redis.exceptions
from aiohttp import web

from service.auth import DEVELOPMENT_PRINCIPAL, Principal
from service.errors import ApiError, Forbidden, ServiceUnavailable, Unauthorized
from service.keys import keyring_key, sessions_key, settings_key
from service.publisher import is_out_of_memory
from service.sessions import SESSION_COOKIE

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

principal_key = "principal"
# Health, the login page and its assets, and the login call itself.
PUBLIC_PATHS = frozenset({"/healthz", "/login", "/"})
PUBLIC_PREFIXES = ("/static/",)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
WEBSOCKET_PATH = "/api/v1/tasks/ws"


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
    except redis.exceptions.ResponseError as exc:
        if not is_out_of_memory(exc):
            logger.exception("redis refused a command on %s %s", request.method, request.path)
            return _json_error(500, {"error": "internal error"})
        logger.warning("redis out of memory during %s %s", request.method, request.path)
        unavailable = ServiceUnavailable("task store out of memory, retry later", retry_after=30)
        return _json_error(unavailable.status, unavailable.body(), unavailable.headers)
    except Exception:
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return _json_error(500, {"error": "internal error"})


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in PUBLIC_PATHS or request.path.startswith(PUBLIC_PREFIXES):
        return await handler(request)
    if request.path == "/api/v1/session" and request.method == "POST":
        return await handler(request)
    request[principal_key] = await authenticate(request)
    return await handler(request)


async def authenticate(request: web.Request) -> Principal:
    """Bearer key, else session cookie, else (websocket only) a one-time ticket."""
    keyring = request.app[keyring_key]
    if not keyring.enabled:
        return DEVELOPMENT_PRINCIPAL
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        principal = keyring.lookup(token.strip()) if scheme.lower() == "bearer" else None
        if principal is None:
            raise Unauthorized()
        return principal
    sessions = request.app[sessions_key]
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        principal = await sessions.lookup(cookie)
        if principal is not None:
            # A cookie rides along on cross-site requests: changes need our own origin.
            if request.method not in SAFE_METHODS and not origin_allowed(request, True):
                raise Forbidden("cross-origin request refused")
            return principal
    ticket = request.query.get("ticket")
    if ticket and request.path == WEBSOCKET_PATH:
        principal = await sessions.redeem_ticket(ticket)
        if principal is not None:
            return principal
    raise Unauthorized()


def origin_allowed(request: web.Request, required: bool = False) -> bool:
    """The request's Origin is ours or configured; a missing Origin passes unless required."""
    origin = request.headers.get("Origin")
    if origin is None:
        return not required
    if urlsplit(origin).netloc == request.host:
        return True
    allowed = request.app[settings_key].allowed_origins
    return origin.rstrip("/") in {o.strip().rstrip("/") for o in allowed.split(",") if o.strip()}


def principal_of(request: web.Request) -> Principal:
    return request[principal_key]
