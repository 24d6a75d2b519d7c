"""API keys: `Authorization: Bearer <token>` maps to an owner and a role."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Literal

Role = Literal["user", "admin"]


@dataclass(frozen=True)
class Principal:
    owner: str
    role: Role
    # Where the caller's rights come from: the fingerprint of its API key, and the digest
    # of the browser session it came through, if any. Sessions and websockets are checked
    # against them again later (a removed key or a logout ends them).
    key_id: str | None = field(default=None, compare=False)
    session_id: str | None = field(default=None, compare=False)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


# Without configured keys (development on loopback only) every caller is this principal.
DEVELOPMENT_PRINCIPAL = Principal(owner="dev", role="admin")


def key_fingerprint(token: str) -> str:
    """What sessions and tickets store to name their key: never the key itself."""
    return hashlib.sha256(f"claw:api-key:{token}".encode()).hexdigest()


class KeyRing:
    """The configured API keys, parsed from `token:owner:role,...`."""

    def __init__(self, spec: str) -> None:
        self._keys: dict[str, Principal] = {}
        for entry in filter(None, (e.strip() for e in spec.split(","))):
            parts = entry.split(":")
            if len(parts) != 3 or not all(parts) or parts[2] not in ("user", "admin"):
                raise ValueError("each entry must be token:owner:role with role user or admin")
            token, owner, role = parts
            self._keys[token] = Principal(
                owner=owner,
                role=role,  # type: ignore[arg-type]
                key_id=key_fingerprint(token),
            )
        self._by_key_id = {p.key_id: p for p in self._keys.values()}

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def lookup(self, token: str) -> Principal | None:
        # Compare against every key in constant time per key: no early exit on a match
        # position an attacker could time.
        found = None
        for candidate, principal in self._keys.items():
            if hmac.compare_digest(candidate.encode(), token.encode()):
                found = principal
        return found

    def resolve(self, key_id: str | None) -> Principal | None:
        """The current principal of a key named by its fingerprint (a session's, a ticket's):
        None once the key is gone, its present role if that changed."""
        return self._by_key_id.get(key_id) if key_id else None
