"""The one URL table."""

from __future__ import annotations

from aiohttp import web

from service.views import health, submit

API = "/api/v1/tasks"


def setup_routes(app: web.Application) -> None:
    # Operations
    app.router.add_get("/healthz", health.healthz)
    # Submission
    app.router.add_post(f"{API}/ai/generate", submit.submit_ai_generate)
