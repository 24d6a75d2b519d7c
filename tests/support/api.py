"""A small HTTP client for the gateway's API in tests."""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient
from claw_client import AsyncClawClient

ADMIN = "admin-token-0123456789"
ALICE = "alice-token-0123456789"
BOB = "bob-token-0123456789"
API_KEYS = f"{ADMIN}:ops:admin,{ALICE}:alice:user,{BOB}:bob:user"


class Api:
    """The gateway's API as tests call it: (status, body) for any request, through the
    client package's transport (clients/python: `AsyncClawClient.request`), so every test
    that calls the API exercises the client too. `http` is kept for the tests that open
    websockets beside it."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str, token: str | None) -> None:
        self.http = http
        self.base_url = base_url
        self.token = token
        # One client per Api (a test's): building one costs ~25 ms (its TLS context).
        self._claw: AsyncClawClient | None = None

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        headers.update(extra or {})
        return headers

    async def call(
        self, method: str, path: str, *, json: Any = None, params: dict | None = None,
        headers: dict[str, str] | None = None, data: Any = None,
    ) -> tuple[int, Any]:  # fmt: skip
        if self._claw is None:
            self._claw = AsyncClawClient(self.base_url, self.token or "")
        resp = await self._claw.request(
            method, path, json=json, params=params, headers=headers, content=data
        )
        is_json = resp.headers.get("Content-Type", "").startswith("application/json")
        return resp.status_code, resp.json() if is_json else resp.text

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
