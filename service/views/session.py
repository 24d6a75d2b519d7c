"""Login with an API key into an HttpOnly session cookie; logout; who am I."""

from __future__ import annotations

from aiohttp import web
from marshmallow import fields, validate

from service.errors import Unauthorized
from service.keys import keyring_key, sessions_key, settings_key
from service.middlewares import principal_of
from service.requests import load_json
from service.schemas import StrictSchema
from service.sessions import SESSION_COOKIE


class LoginRequest(StrictSchema):
    api_key = fields.String(required=True, validate=validate.Length(1, 500))


async def login(request: web.Request) -> web.Response:
    data = await load_json(request, LoginRequest())
    principal = request.app[keyring_key].lookup(data["api_key"])
    if principal is None:
        raise Unauthorized("unknown API key")
    settings = request.app[settings_key]
    token = await request.app[sessions_key].create(principal)
    response = web.json_response({"owner": principal.owner, "role": principal.role})
    response.set_cookie(
        SESSION_COOKIE, token, max_age=settings.session_ttl, httponly=True,
        samesite="Strict", secure=settings.is_production, path="/",
    )  # fmt: skip
    return response


async def logout(request: web.Request) -> web.Response:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await request.app[sessions_key].delete(token)
    response = web.json_response({"status": "logged out"})
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


async def whoami(request: web.Request) -> web.Response:
    principal = principal_of(request)
    auth_required = request.app[keyring_key].enabled
    return web.json_response(
        {"owner": principal.owner, "role": principal.role, "auth_required": auth_required}
    )
