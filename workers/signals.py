"""Worker lifecycle hooks: keep the worker registry current, check Redis at start-up."""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

import redis
from celery.signals import heartbeat_sent, worker_ready, worker_shutdown

from workers import registry
from workers.redis_client import sync_redis
from workers.settings import get_settings

logger = logging.getLogger(__name__)


@functools.cache
def redis_client() -> redis.Redis:
    return sync_redis(get_settings())


def check_eviction_policy(client: Any) -> str | None:
    """Warn unless Redis runs with `noeviction`: evicting queue keys silently loses tasks."""
    try:
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy")
    except redis.exceptions.ResponseError:
        return None  # CONFIG is disabled on some managed Redis offerings
    if policy != "noeviction":
        logger.warning(
            "Redis maxmemory-policy is %r: under memory pressure Redis may evict queue and "
            "task keys and lose tasks; set it to 'noeviction'",
            policy,
        )
    return policy


@worker_ready.connect
def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    app = sender.app
    hostname = sender.hostname
    client = redis_client()
    check_eviction_policy(client)
    registry.record_worker(
        client,
        hostname,
        {
            "queues": sorted(app.amqp.queues.consume_from or app.amqp.queues),
            "concurrency": sender.pool.num_processes if sender.pool else None,
            "pid": os.getpid(),
        },
    )


@heartbeat_sent.connect
def _on_heartbeat(sender: Any = None, **_: Any) -> None:
    try:
        registry.record_heartbeat(redis_client(), sender.eventer.hostname)
    except redis.exceptions.RedisError as exc:
        logger.warning("could not record heartbeat: %s", exc)


@worker_shutdown.connect
def _on_worker_shutdown(sender: Any = None, **_: Any) -> None:
    try:
        registry.record_offline(redis_client(), sender.hostname)
    except redis.exceptions.RedisError as exc:
        logger.warning("could not record worker shutdown: %s", exc)
