"""Browser sessions and websocket tickets: opaque random tokens naming the API key they
were made from.

Only a hash of each token is stored, so a Redis dump does not hand out live sessions, and
a session holds the fingerprint of its key, never the key nor its rights: every use asks
the current key ring who that key is now (service/middlewares.py), so removing a key or
changing its role applies to its sessions at once. Ending a session is published on
`SESSION_ENDED_CHANNEL`, so every gateway process closes the websockets opened with it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

import redis.asyncio

from service.auth import Principal
from workers.core.keys import SESSION_ENDED_CHANNEL, session_key, ticket_key

SESSION_COOKIE = "claw_session"
TICKET_TTL = 30


def session_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _ticket_key(token: str) -> str:
    return ticket_key(session_digest(token))


@dataclass(frozen=True)
class Grant:
    """What a session or ticket holds: the key it came from and, for a ticket issued
    through a browser session, that session."""

    key_id: str | None
    session_id: str | None = None


class SessionStore:
    def __init__(self, client: redis.asyncio.Redis, ttl: int) -> None:
        self.client = client
        self.ttl = ttl

    async def create(self, principal: Principal) -> str:
        if principal.key_id is None:
            raise ValueError("a session needs the API key it comes from")
        token = secrets.token_urlsafe(32)
        grant = Grant(principal.key_id)
        await self.client.set(session_key(session_digest(token)), _dump(grant), ex=self.ttl)
        return token

    async def lookup(self, token: str) -> Grant | None:
        digest = session_digest(token)
        grant = _load(await self.client.get(session_key(digest)))
        return Grant(grant.key_id, digest) if grant is not None else None

    async def delete(self, token: str) -> None:
        await self.end(session_digest(token))

    async def end(self, digest: str) -> None:
        """Delete the session and tell every gateway process to close its websockets."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.delete(session_key(digest))
            pipe.publish(SESSION_ENDED_CHANNEL, digest)
            await pipe.execute()

    async def alive(self, digests: Iterable[str]) -> set[str]:
        """Which of these sessions still exist (not logged out, not expired)."""
        digests = list(digests)
        if not digests:
            return set()
        async with self.client.pipeline(transaction=False) as pipe:
            for digest in digests:
                pipe.exists(session_key(digest))
            found = await pipe.execute()
        return {digest for digest, n in zip(digests, found, strict=True) if n}

    async def issue_ticket(self, principal: Principal) -> str:
        # In development (no keys) the ticket names no key: it is never asked for there,
        # and once keys are configured it is worth nothing.
        token = secrets.token_urlsafe(24)
        grant = Grant(principal.key_id, principal.session_id)
        await self.client.set(_ticket_key(token), _dump(grant), ex=TICKET_TTL)
        return token

    async def redeem_ticket(self, token: str) -> Grant | None:
        """A ticket works once, and not after the session it was issued through ended."""
        grant = _load(await self.client.getdel(_ticket_key(token)))
        if grant is None or grant.session_id is None:
            return grant
        return grant if await self.alive([grant.session_id]) else None


def _dump(grant: Grant) -> str:
    return json.dumps({"key": grant.key_id, "session": grant.session_id})


def _load(raw: bytes | str | None) -> Grant | None:
    if not raw:
        return None
    data = json.loads(raw)
    # Sessions from before keys were recorded name none: they cannot be checked, so
    # they no longer count.
    key_id = data.get("key") if isinstance(data, dict) else None
    return Grant(key_id, data.get("session")) if isinstance(key_id, str) else None
