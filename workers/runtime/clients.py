"""The Redis client and task index of a worker process (or any Python publisher), made
on first use: importing this never connects."""

from __future__ import annotations

import functools

import redis

from workers.core.redis_client import sync_redis
from workers.core.settings import get_settings
from workers.taskindex.index import TaskIndex


@functools.cache
def redis_client() -> redis.Redis:
    return sync_redis(get_settings())


@functools.cache
def task_index() -> TaskIndex:
    return TaskIndex(redis_client(), ttl=get_settings().task_history_ttl)
