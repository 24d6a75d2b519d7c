"""A small HTTP client for the gateway's API in tests."""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

ADMIN = "admin-token-0123456789"
ALICE = "alice-token-0123456789"
BOB = "bob-token-0123456789"
API_KEYS = f"{ADMIN}:ops:admin,{ALICE}:alice:user,{BOB}:bob:user"


class Api:
    def __init__(self, http: aiohttp.ClientSession, base_url: str, token: str | None) -> None:
        self.http = http
        self.base_url = base_url
        self.token = token

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        headers.update(extra or {})
        return headers

    async def call(
        self, method: str, path: str, *, json: Any = None, params: dict | None = None,
        headers: dict[str, str] | None = None, data: Any = None,
    ) -> tuple[int, Any]:  # fmt: skip
        async with self.http.request(
            method, f"{self.base_url}{path}", json=json, params=params, data=data,
            headers=self.headers(headers),
        ) as resp:  # fmt: skip
            body = (
                await resp.json() if resp.content_type == "application/json" else await resp.text()
            )
            return resp.status, body

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        return await self.call("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        return await self.call("POST", path, **kwargs)


class InProcessGateway:
    """The in-process gateway (`serve_gateway`): a `base_url`, like a gateway process."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.base_url = str(client.make_url("")).rstrip("/")

    def api(self, token: str | None) -> Api:
        """A client of its API with `token` (over the test client's session)."""
        return Api(self.client.session, self.base_url, token)
