"""Browser sessions and websocket tickets: opaque random tokens mapped to a principal.

Only a hash of each token is stored, so a Redis dump does not hand out live sessions.
"""

from __future__ import annotations

import hashlib
import json
import secrets

import redis.asyncio

from service.auth import Principal

SESSION_COOKIE = "claw_session"
TICKET_TTL = 30


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SessionStore:
    def __init__(self, client: redis.asyncio.Redis, ttl: int) -> None:
        self.client = client
        self.ttl = ttl

    async def create(self, principal: Principal) -> str:
        token = secrets.token_urlsafe(32)
        await self.client.set(f"claw:session:{_digest(token)}", _dump(principal), ex=self.ttl)
        return token

    async def lookup(self, token: str) -> Principal | None:
        return _load(await self.client.get(f"claw:session:{_digest(token)}"))

    async def delete(self, token: str) -> None:
        await self.client.delete(f"claw:session:{_digest(token)}")

    async def issue_ticket(self, principal: Principal) -> str:
        token = secrets.token_urlsafe(24)
        await self.client.set(f"claw:wsticket:{_digest(token)}", _dump(principal), ex=TICKET_TTL)
        return token

    async def redeem_ticket(self, token: str) -> Principal | None:
        """A ticket works once."""
        return _load(await self.client.getdel(f"claw:wsticket:{_digest(token)}"))


def _dump(principal: Principal) -> str:
    return json.dumps({"owner": principal.owner, "role": principal.role})


def _load(raw: str | None) -> Principal | None:
    if not raw:
        return None
    data = json.loads(raw)
    return Principal(owner=data["owner"], role=data["role"])
