"""Verify a task webhook (Standard Webhooks: https://www.standardwebhooks.com)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from claw_client.errors import WebhookVerificationError

PREFIX = "whsec_"


def verify_webhook(
    secret: str, headers: Mapping[str, str], body: bytes | str, tolerance: float = 300
) -> dict[str, Any]:
    """The JSON payload of a delivery whose signature and timestamp verify; raises
    WebhookVerificationError otherwise.

    `secret`: `whsec_<base64>` (GET /api/v1/webhooks/secret); `headers`: the request's
    (any case); `body`: the raw body, as received; `tolerance`: seconds the
    `webhook-timestamp` may be off the local clock (either way: replays and clock skew).
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id = lowered["webhook-id"]
        timestamp = lowered["webhook-timestamp"]
        signatures = lowered["webhook-signature"].split(" ")
    except KeyError as exc:
        raise WebhookVerificationError(f"missing header {exc.args[0]}") from None
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise WebhookVerificationError("bad webhook-timestamp") from None
    if abs(time.time() - sent_at) > tolerance:
        raise WebhookVerificationError("webhook-timestamp outside the tolerance")
    raw = body.encode() if isinstance(body, str) else body
    try:
        key = base64.b64decode(secret.removeprefix(PREFIX), validate=True)
    except ValueError:
        raise WebhookVerificationError("the secret is not whsec_<base64>") from None
    expected = base64.b64encode(
        hmac.new(key, f"{msg_id}.{timestamp}.".encode() + raw, hashlib.sha256).digest()
    ).decode()
    if not any(
        version == "v1" and hmac.compare_digest(value.encode(), expected.encode())
        for version, _, value in (signature.partition(",") for signature in signatures)
    ):
        raise WebhookVerificationError("no matching signature")
    try:
        payload = json.loads(raw)
    except ValueError:
        raise WebhookVerificationError("the body is not JSON") from None
    if not isinstance(payload, dict):
        raise WebhookVerificationError("the body is not a JSON object")
    return payload
