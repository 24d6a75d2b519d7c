"""Webhook delivery: a JSON POST signed with HMAC-SHA256, to a checked address only."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import socket
import ssl
import time
from typing import Any
from urllib.parse import urljoin

from workers.ai.llm import retry_after
from workers.core.telemetry import outgoing_request
from workers.notify.targets import Target, TargetPolicy, TargetRefused, resolve
from workers.runtime.base import PermanentError, TransientError

SIGNATURE_HEADER = "X-Claw-Signature"
TIMESTAMP_HEADER = "X-Claw-Timestamp"
DELIVERY_HEADER = "X-Claw-Delivery"
MAX_REDIRECTS = 3
USER_AGENT = "claw-webhooks/1"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256(secret, "<timestamp>.<body>").

    The timestamp is signed too, so a receiver can refuse replays of old deliveries.
    """
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the checked address while sending the URL's host name."""

    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._address = target.address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(
            target.host, target.port, timeout=timeout, context=ssl.create_default_context()
        )
        self._address = target.address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        # The certificate is checked against the host name, not the address.
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def post_json(
    url: str,
    payload: dict[str, Any],
    *,
    secret: str,
    timeout: float,
    policy: TargetPolicy,
    delivery_id: str | None = None,
) -> dict[str, Any]:
    """POST `payload` to `url`; follows up to 3 307/308 redirects, each target checked.

    5xx, 429, timeouts and connection errors raise TransientError; refusals, other
    statuses and forbidden targets raise PermanentError.
    """
    body = json.dumps(payload, separators=(",", ":"), default=str).encode()
    timestamp = str(int(time.time()))
    headers = {
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature(secret, timestamp, body),
    }
    if delivery_id:
        headers[DELIVERY_HEADER] = delivery_id
    try:
        status, response, url, address = post_signed(
            url, body, headers, timeout=timeout, policy=policy
        )
    except TargetRefused as exc:
        raise PermanentError(str(exc)) from None
    if 200 <= status < 300:
        return {"status": status, "url": url, "address": address}
    if status >= 500 or status in (408, 429):
        raise TransientError(
            f"webhook answered {status}", retry_after=retry_after(response.headers)
        )
    raise PermanentError(f"webhook answered {status}; not retried")


def post_signed(
    url: str, body: bytes, headers: dict[str, str], *, timeout: float, policy: TargetPolicy
) -> tuple[int, http.client.HTTPResponse, str, str]:
    """POST `body` (JSON) with `headers` (its signature) to `url`, following up to 3
    307/308 redirects, each target checked against `policy` (TargetRefused) and connected
    to at its checked address. Returns (status, response, the last URL, its address).
    Timeouts and connection errors raise TransientError."""
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers}
    for _ in range(MAX_REDIRECTS + 1):
        target = resolve(url, policy)
        connection_class = (
            _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
        )
        connection = connection_class(target, timeout)
        try:
            with outgoing_request("POST", target.host, target.port) as traced:
                sent = {**headers, **traced.headers}
                connection.request("POST", target.path, body=body, headers=sent)
                response = connection.getresponse()
                traced.answered(response.status)
            response.read(64 * 1024)
        except TimeoutError as exc:
            raise TransientError(f"webhook {target.host} timed out after {timeout}s") from exc
        except (ConnectionError, OSError, http.client.HTTPException) as exc:
            raise TransientError(f"webhook {target.host} unreachable: {exc}") from exc
        finally:
            connection.close()
        status = response.status
        if status in (307, 308) and response.getheader("Location"):
            url = urljoin(url, response.getheader("Location", ""))
            continue
        return status, response, url, target.address
    raise TargetRefused(f"webhook redirected more than {MAX_REDIRECTS} times")
