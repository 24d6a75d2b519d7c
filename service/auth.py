"""API keys: `Authorization: Bearer <token>` maps to an owner and a role."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Literal

Role = Literal["user", "admin"]


@dataclass(frozen=True)
class Principal:
    owner: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


# Without configured keys (development on loopback only) every caller is this principal.
DEVELOPMENT_PRINCIPAL = Principal(owner="dev", role="admin")


class KeyRing:
    """The configured API keys, parsed from `token:owner:role,...`."""

    def __init__(self, spec: str) -> None:
        self._keys: dict[str, Principal] = {}
        for entry in filter(None, (e.strip() for e in spec.split(","))):
            parts = entry.split(":")
            if len(parts) != 3 or not all(parts) or parts[2] not in ("user", "admin"):
                raise ValueError("each entry must be token:owner:role with role user or admin")
            token, owner, role = parts
            self._keys[token] = Principal(owner=owner, role=role)  # type: ignore[arg-type]

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
