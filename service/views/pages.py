"""The web UI's pages: static files served by the gateway, no build step."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from aiohttp import web

from service.errors import ApiError
from service.middlewares import authenticate

STATIC = Path(__file__).resolve().parent.parent / "static"


async def _page(request: web.Request, name: str) -> web.StreamResponse:
    """A page for a signed-in caller; otherwise the login page, coming back here after."""
    try:
        await authenticate(request)
    except ApiError:
        # Back here once logged in (a deep link to a task, filters in the query).
        raise web.HTTPFound(f"/login?next={quote(request.path_qs, safe='')}") from None
    return web.FileResponse(STATIC / name, headers={"Cache-Control": "no-store"})


async def index(request: web.Request) -> web.StreamResponse:
    return await _page(request, "index.html")


async def api_docs(request: web.Request) -> web.StreamResponse:
    """The interactive API page (Swagger UI, served from the swagger-ui-bundle package)."""
    return await _page(request, "api-docs.html")


async def login_page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "login.html", headers={"Cache-Control": "no-store"})
