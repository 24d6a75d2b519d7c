"""Submitting an AI reply through the gateway (in-process) runs it on a real worker."""

from __future__ import annotations

import aiohttp
from claw_client import AsyncClawClient

from tests.support.waiting import wait_for_state
from workers.core import queues


async def test_ai_generate_answers_202_with_the_seed_shape_and_runs(
    serve_gateway, worker, celery_app
) -> None:
    gateway = await serve_gateway()
    payload = {"conversation_id": "conv_123", "user_message": "hello", "temperature": 0.2}
    async with AsyncClawClient(gateway.base_url, "") as claw:  # no keys: no auth
        answer = await claw.request("POST", "/api/v1/tasks/ai/generate", json=payload)
    assert answer.status_code == 202
    body = answer.json()
    assert set(body) == {"task_id", "status", "message"}
    assert body["status"] == "PENDING"
    done = wait_for_state(celery_app, body["task_id"], {"SUCCESS", "FAILURE"}, timeout=20)
    assert done.state == "SUCCESS"
    assert done.result["conversation_id"] == "conv_123"
    assert done.result["offline"] is True
    assert done.name == queues.GENERATE_AI_RESPONSE
    assert done.queue == queues.AI_HIGH_PRIORITY


async def test_bad_submission_is_a_400_naming_the_field(serve_gateway) -> None:
    gateway = await serve_gateway()
    url = f"{gateway.base_url}/api/v1/tasks/ai/generate"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json={"user_message": "hi", "priority": 12}) as r:
            assert r.status == 400
            body = await r.json()
        assert set(body["details"]) == {"conversation_id", "priority"}
        async with http.post(
            url, data="{not json", headers={"Content-Type": "application/json"}
        ) as r:
            assert r.status == 400
            assert "malformed JSON" in (await r.json())["error"]
        async with http.post(url, data="a=b", headers={"Content-Type": "text/plain"}) as r:
            assert r.status == 415
        # A lone UTF-16 surrogate escape decodes to text nothing downstream can encode.
        lone = '{"conversation_id": "c", "user_message": "\\ud800 hi"}'
        async with http.post(url, data=lone, headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400 and "surrogate" in (await r.json())["error"]
        pair = '{"conversation_id": "c", "user_message": "\\ud83d\\ude00 hi"}'  # one emoji
        async with http.post(url, data=pair, headers={"Content-Type": "application/json"}) as r:
            assert r.status == 202
        both = {"conversation_id": "c", "user_message": "m", "countdown": 5,
                "eta": "2999-01-01T00:00:00+00:00"}  # fmt: skip
        async with http.post(url, json=both) as r:
            assert r.status == 400
            assert "eta" in (await r.json())["details"]
        past = {"conversation_id": "c", "user_message": "m", "eta": "2001-01-01T00:00:00+00:00"}
        async with http.post(url, json=past) as r:
            assert r.status == 400
            assert "eta" in (await r.json())["details"]
        async with http.post(url, data=b"x" * (2 * 1024 * 1024),
                             headers={"Content-Type": "application/json"}) as r:  # fmt: skip
            assert r.status == 413
            assert (await r.json())["error"]
