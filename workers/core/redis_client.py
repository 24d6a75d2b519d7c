"""Redis clients for the platform's own keys, built from REDIS_URL.

redis-py's `from_url` knows redis://, rediss:// and unix://. A `sentinel://` URL (as
kombu and Celery spell it: `sentinel://[:password@]host:port[;sentinel://host:port]/db`)
names the sentinels; the client asks them for the current primary.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from workers.core.settings import Settings

SOCKET_TIMEOUT = 5.0


@dataclass(frozen=True)
class SentinelTarget:
    sentinels: list[tuple[str, int]]
    password: str | None
    db: int


def parse_sentinel_url(url: str) -> SentinelTarget:
    sentinels: list[tuple[str, int]] = []
    password: str | None = None
    db = 0
    for part in url.split(";"):
        parts = urlsplit(part.strip())
        sentinels.append((parts.hostname or "localhost", parts.port or 26379))
        password = password or parts.password
        if parts.path.strip("/"):
            db = int(parts.path.strip("/"))
    return SentinelTarget(sentinels, password, db)


def _common(settings: Settings) -> dict:
    return {
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": SOCKET_TIMEOUT,
        "health_check_interval": 15,
        "decode_responses": True,
    }


def sync_redis(settings: Settings) -> redis.Redis:
    """A blocking client (workers, Beat, command-line tools)."""
    if settings.redis_url.startswith("sentinel://"):
        target = parse_sentinel_url(settings.redis_url)
        sentinel = redis.sentinel.Sentinel(
            target.sentinels, socket_timeout=SOCKET_TIMEOUT, password=None
        )
        return sentinel.master_for(
            settings.redis_sentinel_master,
            db=target.db,
            password=target.password,
            **_common(settings),
        )
    return redis.Redis.from_url(settings.redis_url, **_common(settings))


def async_redis(settings: Settings, *, retry: bool = True) -> redis.asyncio.Redis:
    """An asyncio client (the gateway). `retry=False`: a lost connection raises instead of
    being retried on a new one unseen (redis-py retries 3 times by default), for a reader
    that must know it reconnected."""
    options = _common(settings)
    if not retry:
        options["retry"] = Retry(NoBackoff(), 0)
    if settings.redis_url.startswith("sentinel://"):
        target = parse_sentinel_url(settings.redis_url)
        sentinel = redis.asyncio.sentinel.Sentinel(target.sentinels, socket_timeout=SOCKET_TIMEOUT)
        return sentinel.master_for(
            settings.redis_sentinel_master,
            db=target.db,
            password=target.password,
            **options,
        )
    return redis.asyncio.Redis.from_url(settings.redis_url, **options)
