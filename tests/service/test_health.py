"""`GET /healthz` (and its alias `GET /health`) over HTTP, the gateway in-process."""

from __future__ import annotations

import aiohttp
import pytest

from tests.support.api import ADMIN, API_KEYS

# `/health` is what people try first: the same answer as `/healthz`.
HEALTH_PATHS = pytest.mark.parametrize("path", ["/healthz", "/health"])


@HEALTH_PATHS
async def test_healthz_reports_redis_and_live_workers(serve_gateway, worker, path) -> None:
    gateway = await serve_gateway()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gateway.base_url}{path}") as resp:
            assert resp.status == 200
            body = await resp.json()
    assert body["status"] == "ok" and body["redis"] == "ok"
    assert body["workers"] >= 1


@HEALTH_PATHS
async def test_healthz_is_degraded_with_reasons_when_tasks_would_wait(
    serve_gateway, redis_url, path
) -> None:
    """No live worker (a database none uses): still 200, so a load balancer keeps the
    gateway, but `degraded`, saying why submitted tasks would wait."""
    gateway = await serve_gateway(redis_url=redis_url.rsplit("/", 1)[0] + "/19")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gateway.base_url}{path}") as resp:
            assert resp.status == 200
            body = await resp.json()
    assert body["status"] == "degraded" and body["redis"] == "ok" and body["workers"] == 0
    assert body["reasons"][0] == "no live workers"  # (and any queue with waiting tasks)


@HEALTH_PATHS
async def test_healthz_is_503_with_a_reason_when_redis_is_down(serve_gateway, path) -> None:
    from workers.dev.embedded_redis import free_port

    dead_url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    gw = await serve_gateway(redis_url=dead_url)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gw.base_url}{path}") as resp:
            assert resp.status == 503
            assert resp.headers["Retry-After"]
            body = await resp.json()
    assert body["status"] == "unavailable"
    assert "redis unreachable" in body["reason"]


async def test_unknown_routes_and_methods_answer_json(serve_gateway) -> None:
    gateway = await serve_gateway()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gateway.base_url}/nope") as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]
        async with http.delete(f"{gateway.base_url}/healthz") as resp:
            assert resp.status == 405
            assert (await resp.json())["error"]


async def test_health_is_a_public_alias_of_healthz_documented_in_openapi(
    serve_gateway, worker
) -> None:
    """With API keys set: no key needed, the same body as /healthz; both in OpenAPI, and
    the operators' task-system report stays at /api/v1/tasks/health (admin)."""
    gateway = await serve_gateway(api_keys=API_KEYS)
    async with aiohttp.ClientSession() as http:
        answers = []
        for path in ("/healthz", "/health"):
            async with http.get(f"{gateway.base_url}{path}") as resp:
                answers.append((resp.status, await resp.json()))
        async with http.get(f"{gateway.base_url}/api/v1/tasks/health") as resp:
            assert resp.status == 401
        key = {"Authorization": f"Bearer {ADMIN}"}
        async with http.get(f"{gateway.base_url}/api/v1/openapi.json", headers=key) as resp:
            paths = (await resp.json())["paths"]
    (status, body), (alias_status, alias_body) = answers
    assert status == alias_status == 200 and body.keys() == alias_body.keys()
    assert body["status"] == alias_body["status"] and body["redis"] == alias_body["redis"]
    alias, healthz = paths["/health"]["get"], paths["/healthz"]["get"]
    assert "security" not in alias and set(alias["responses"]) == set(healthz["responses"])
    assert alias["operationId"] != healthz["operationId"]
