"""Typed keys of everything the application object holds."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import redis.asyncio
from aiohttp import web
from celery import Celery

from service.auth import KeyRing
from service.feed import FeedHub
from service.publisher import TaskPublisher
from service.redis_pipe import RedisPipe
from service.sessions import SessionStore
from service.task_store import TaskStore
from service.waiter import ResultWaiter
from workers.core.settings import Settings

settings_key = web.AppKey("settings", Settings)
redis_key = web.AppKey("redis", redis.asyncio.Redis)
# The hot paths' short commands, auto-pipelined on one connection (service/redis_pipe.py).
redis_pipe_key = web.AppKey("redis_pipe", RedisPipe)
# For the blocking calls run in the executor (knowledge search): the same Redis, sync.
sync_redis_key = web.AppKey("sync_redis", redis.Redis)
celery_key = web.AppKey("celery", Celery)
executor_key = web.AppKey("executor", ThreadPoolExecutor)
keyring_key = web.AppKey("keyring", KeyRing)
publisher_key = web.AppKey("publisher", TaskPublisher)
task_store_key = web.AppKey("task_store", TaskStore)
waiter_key = web.AppKey("waiter", ResultWaiter)
sessions_key = web.AppKey("sessions", SessionStore)
feed_key = web.AppKey("feed", FeedHub)
