"""The in-app inbox: a capped list per user in Redis, pushed to the user's live feed."""

from __future__ import annotations

import json
import time
from typing import Any

from workers.core.keys import delivered_key, inbox_key
from workers.runtime.progress import feed_event


def deliver(
    client: Any, user_id: str, notification: dict[str, Any], cap: int, delivery_id: str | None
) -> bool:
    """Store `notification` first in the user's inbox (keeping `cap`) and push it to their
    feed; False when this delivery id was stored already (a redelivered task)."""
    if delivery_id and not client.sadd(delivered_key(user_id), delivery_id):
        return False
    item = {**notification, "id": delivery_id, "created_at": time.time()}
    with client.pipeline(transaction=True) as pipe:
        pipe.lpush(inbox_key(user_id), json.dumps(item))
        pipe.ltrim(inbox_key(user_id), 0, cap - 1)
        pipe.expire(delivered_key(user_id), 7 * 24 * 3600)
        feed_event(
            client,
            {"type": "notification", "owner": user_id, "ts": item["created_at"],
             "notification": item},
            pipe,
        )  # fmt: skip
        pipe.execute()
    return True


def read_inbox(client: Any, user_id: str, limit: int = 50) -> list[dict[str, Any]]:
    return [json.loads(t) for t in client.lrange(inbox_key(user_id), 0, limit - 1)]
