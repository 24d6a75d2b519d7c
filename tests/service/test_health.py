"""`GET /healthz` over HTTP, the gateway in-process."""

from __future__ import annotations

import aiohttp


async def test_healthz_reports_redis_and_live_workers(serve_gateway, worker) -> None:
    gateway = await serve_gateway()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gateway.base_url}/healthz") as resp:
            assert resp.status == 200
            body = await resp.json()
    assert body["status"] == "ok" and body["redis"] == "ok"
    assert body["workers"] >= 1


async def test_healthz_is_degraded_with_reasons_when_tasks_would_wait(
    serve_gateway, redis_url
) -> None:
    """No live worker (a database none uses): still 200, so a load balancer keeps the
    gateway, but `degraded`, saying why submitted tasks would wait."""
    gateway = await serve_gateway(redis_url=redis_url.rsplit("/", 1)[0] + "/19")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gateway.base_url}/healthz") as resp:
            assert resp.status == 200
            body = await resp.json()
    assert body["status"] == "degraded" and body["redis"] == "ok" and body["workers"] == 0
    assert body["reasons"][0] == "no live workers"  # (and any queue with waiting tasks)


async def test_healthz_is_503_with_a_reason_when_redis_is_down(serve_gateway) -> None:
    from workers.dev.embedded_redis import free_port

    dead_url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    gw = await serve_gateway(redis_url=dead_url)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gw.base_url}/healthz") as resp:
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
