"""Scheduling options are validated before anything is written. In-process against
`create_app`, on the session's Redis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from service.app import create_app
from tests.support.api import ALICE, API_KEYS
from workers.core.settings import load_settings

AI = "/api/v1/tasks/ai/generate"
AUTH = {"Authorization": f"Bearer {ALICE}"}


async def test_an_eta_in_the_past_is_400_and_keeps_the_idempotency_key_free(
    aiohttp_client, redis_url, key
) -> None:
    client = await aiohttp_client(create_app(load_settings(redis_url=redis_url, api_keys=API_KEYS)))
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    body = {"conversation_id": "c", "user_message": "hi", "eta": past}
    headers = {**AUTH, "Idempotency-Key": key}
    resp = await client.post(AI, json=body, headers=headers)
    assert resp.status == 400
    assert (await resp.json())["details"]["eta"] == ["must be in the future"]
    # The refused request used nothing up: the same key still submits a task.
    body["eta"] = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    resp = await client.post(AI, json=body, headers=headers)
    assert resp.status == 202 and "Idempotent-Replayed" not in resp.headers
    task_id = (await resp.json())["task_id"]
    status = await client.get(f"/api/v1/tasks/status/{task_id}", headers=AUTH)
    assert (await status.json())["status"] == "PENDING"
    cancel = await client.post(f"/api/v1/tasks/cancel/{task_id}", headers=AUTH)
    assert cancel.status == 200
