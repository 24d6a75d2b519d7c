"""Every request passes one middleware: its latency metric, authentication and error
rendering, each in one place."""

from __future__ import annotations

import dataclasses
import functools
import hmac
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import redis.exceptions
from aiohttp import web

from service.auth import DEVELOPMENT_PRINCIPAL, Principal
from service.errors import ApiError, Forbidden, ServiceUnavailable, Unauthorized
from service.keys import keyring_key, sessions_key, settings_key
from service.metrics import metrics_key
from service.publisher import is_out_of_memory
from service.sessions import SESSION_COOKIE, Grant

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

principal_key = web.RequestKey("principal", Principal)
# The canonical paths of the routes only admins may call (the route table's `admin` flag,
# and /metrics, which a METRICS_TOKEN also opens).
admin_paths_key = web.AppKey("admin_paths", frozenset)
METRICS_PATH = "/metrics"
# Health, the dashboard's pages and their assets (they hold no data).
# (method, path) of what answers without a key: the route table's `public` routes and
# the pages (the login page, the dashboard's shell and its static files).
public_routes_key = web.AppKey("public_routes", frozenset)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
WEBSOCKET_PATH = "/api/v1/tasks/ws"


def _json_error(status: int, body: dict, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers)


@web.middleware
async def gateway_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request's latency metric, authentication and error rendering, in one frame.

    As three middlewares they were three coroutines and three of aiohttp's wrappers per
    request: a tenth of a status read's time."""
    started = time.perf_counter()
    status = 500
    try:
        try:
            principal = await authorize(request)
            if principal is not None:
                request[principal_key] = principal
            response = await handler(request)
        except Exception as exc:
            response = error_response(request, exc)
        status = response.status
        return response
    except web.HTTPException as exc:  # a redirect, passed on as aiohttp answers it
        status = exc.status
        raise
    finally:
        info = request.match_info.route.resource
        route = info.canonical if info is not None else "unmatched"
        request.app[metrics_key].observe_request(
            request.method, route, status, time.perf_counter() - started
        )


def error_response(request: web.Request, exc: Exception) -> web.Response:
    """The JSON answer to an error; redirects (an HTTPException below 400) are raised again."""
    if isinstance(exc, ApiError):
        return _json_error(exc.status, exc.body(), exc.headers)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        headers = {k: v for k, v in exc.headers.items() if k.lower() in {"allow", "retry-after"}}
        return _json_error(exc.status, {"error": exc.reason.lower()}, headers)
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        logger.warning("redis unavailable during %s %s: %s", request.method, request.path, exc)
        unavailable = ServiceUnavailable("task store unavailable, retry shortly")
        return _json_error(unavailable.status, unavailable.body(), unavailable.headers)
    if isinstance(exc, redis.exceptions.ResponseError):
        if not is_out_of_memory(exc):
            logger.error(
                "redis refused a command on %s %s", request.method, request.path, exc_info=exc
            )
            return _json_error(500, {"error": "internal error"})
        logger.warning("redis out of memory during %s %s", request.method, request.path)
        unavailable = ServiceUnavailable("task store out of memory, retry later", retry_after=30)
        return _json_error(unavailable.status, unavailable.body(), unavailable.headers)
    logger.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return _json_error(500, {"error": "internal error"})


async def authorize(request: web.Request) -> Principal | None:
    """Who calls (None: a public route, or /metrics with its token), or 401/403."""
    if is_public(request):
        if request.method not in SAFE_METHODS and not origin_allowed(request):
            # Logging in sets the cookie: never on behalf of another site's page.
            raise Forbidden("cross-origin request refused")
        return None
    if request.path == METRICS_PATH and metrics_token_presented(request):
        return None
    principal = await authenticate(request)
    resource = request.match_info.route.resource
    if resource is not None and resource.canonical in request.app[admin_paths_key]:
        if not principal.is_admin:
            raise Forbidden("admin key required")
    return principal


def is_public(request: web.Request) -> bool:
    public = request.app[public_routes_key]
    resource = request.match_info.route.resource
    if resource is None:  # a known path with another method: its 405, not a 401
        return any(request.path == path for _, path in public)
    method = "GET" if request.method == "HEAD" else request.method
    return (method, resource.canonical) in public


async def authenticate(request: web.Request) -> Principal:
    """Bearer key, else session cookie, else (websocket only) a one-time ticket.

    Sessions and tickets name the key they came from: the principal is that key's as the
    key ring has it now, so a removed key ends them and a changed role applies at once.
    """
    if request.path == WEBSOCKET_PATH and not origin_allowed(request):
        # Browsers send cookies with a cross-site websocket handshake (hijacking).
        raise Forbidden("origin not allowed")
    keyring = request.app[keyring_key]
    if not keyring.enabled:
        return _development_principal(request)
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
        grant = await sessions.lookup(cookie)
        if grant is not None:
            # A cookie rides along on cross-site requests: changes need our own origin.
            if request.method not in SAFE_METHODS and not origin_allowed(request, True):
                raise Forbidden("cross-origin request refused")
            return await _granted(request, grant)
    ticket = request.query.get("ticket")
    if ticket and request.path == WEBSOCKET_PATH:
        grant = await sessions.redeem_ticket(ticket)
        if grant is not None:
            return await _granted(request, grant)
    raise Unauthorized()


async def _granted(request: web.Request, grant: Grant) -> Principal:
    principal = request.app[keyring_key].resolve(grant.key_id)
    if principal is None:
        if grant.session_id is not None:
            await request.app[sessions_key].end(grant.session_id)
        raise Unauthorized("session ended: its API key is no longer valid")
    return dataclasses.replace(principal, session_id=grant.session_id)


def _development_principal(request: web.Request) -> Principal:
    """No keys: every caller is an admin, so what a browser can be made to send counts.
    A page on another site must not change anything (a `text/plain` POST needs no CORS
    preflight), nor read anything through a name of its own that resolves to us (DNS
    rebinding: Host and Origin are both the attacker's name then)."""
    if not host_allowed(request):
        raise Forbidden(
            "development mode answers loopback names only (127.0.0.1, localhost, ::1) "
            "and the hosts of ALLOWED_ORIGINS"
        )
    if request.method not in SAFE_METHODS and not origin_allowed(request):
        raise Forbidden("cross-origin request refused")
    return DEVELOPMENT_PRINCIPAL


def host_allowed(request: web.Request) -> bool:
    """The Host header names us: a loopback name, or the host of an allowed origin."""
    return _host_allowed(request.host, request.app[settings_key].allowed_origins)


@functools.lru_cache(maxsize=256)  # a few names per deployment; parsed once each
def _host_allowed(host: str, allowed: str) -> bool:
    hostname = None if "@" in host else urlsplit(f"//{host}").hostname
    if hostname is None:
        return False
    if hostname == "localhost" or hostname in _allowed_hosts(allowed):
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


@functools.cache
def _allowed_origins(setting: str) -> frozenset[str]:
    return frozenset(o.strip().rstrip("/").lower() for o in setting.split(",") if o.strip())


@functools.cache
def _allowed_hosts(setting: str) -> frozenset[str]:
    return frozenset(h for h in (urlsplit(o).hostname for o in _allowed_origins(setting)) if h)


def origin_allowed(request: web.Request, required: bool = False) -> bool:
    """The request's Origin is ours or configured; a missing Origin passes unless required."""
    origin = request.headers.get("Origin")
    if origin is None:
        return not required
    origin = origin.strip().rstrip("/").lower()
    if urlsplit(origin).netloc == request.host.lower():
        return True
    return origin in _allowed_origins(request.app[settings_key].allowed_origins)


def metrics_token_presented(request: web.Request) -> bool:
    """`Authorization: Bearer <METRICS_TOKEN>`: a scraper's credential, for /metrics only."""
    configured = request.app[settings_key].metrics_token
    expected = configured.get_secret_value() if configured is not None else ""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if not expected or scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(expected.encode(), token.strip().encode())


def principal_of(request: web.Request) -> Principal:
    return request[principal_key]
