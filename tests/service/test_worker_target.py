"""Worker control names its target in the query or in the body, never both unread.
In-process against `create_app`; the request is refused before any worker is asked."""

from __future__ import annotations

from service.app import create_app
from tests.support.api import ADMIN, API_KEYS
from workers.core.settings import load_settings


async def test_a_body_beside_a_query_target_is_refused_not_ignored(
    aiohttp_client, redis_url
) -> None:
    client = await aiohttp_client(create_app(load_settings(redis_url=redis_url, api_keys=API_KEYS)))
    resp = await client.post(
        "/api/v1/tasks/workers/shutdown?all=true", data="{not json",
        headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"},
    )  # fmt: skip
    assert resp.status == 400
    assert "body" in (await resp.json())["details"]
