"""The application factory: `create_app(settings)`, used by `__main__` and the tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from service.auth import KeyRing
from service.keys import (
    celery_key,
    executor_key,
    keyring_key,
    publisher_key,
    redis_key,
    settings_key,
    task_store_key,
    waiter_key,
)
from service.metrics import Metrics, metrics_key, metrics_middleware, metrics_view
from service.middlewares import auth_middleware, error_middleware
from service.openapi import setup_openapi
from service.publisher import TaskPublisher
from service.routes import setup_routes
from service.task_store import TaskStore
from service.waiter import ResultWaiter
from workers.celery_app import create_celery_app
from workers.redis_client import async_redis
from workers.settings import Settings

MAX_BODY_BYTES = 1024 * 1024
BLOCKING_THREADS = 16


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[settings_key]
    client = async_redis(settings)
    app[redis_key] = client
    app[task_store_key] = TaskStore(client, ttl=settings.task_history_ttl)
    waiter = ResultWaiter(client)
    await waiter.start()
    app[waiter_key] = waiter
    yield
    await waiter.close()
    await client.aclose()


async def celery_ctx(app: web.Application) -> AsyncIterator[None]:
    # Celery's producer and control calls block: they run in this bounded pool.
    executor = ThreadPoolExecutor(BLOCKING_THREADS, thread_name_prefix="celery")
    celery = create_celery_app(app[settings_key])
    # The gateway reads results from Redis itself. Celery's Redis backend would subscribe
    # to the result channel of every task sent, for an AsyncResult.get() never called.
    celery.conf.result_backend = "disabled"
    app[executor_key] = executor
    app[celery_key] = celery
    app[publisher_key] = TaskPublisher(celery, executor)
    yield
    executor.shutdown(wait=False, cancel_futures=True)
    celery.close()


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[metrics_middleware, error_middleware, auth_middleware],
        client_max_size=MAX_BODY_BYTES,
    )
    app[settings_key] = settings
    app[metrics_key] = Metrics()
    app[keyring_key] = KeyRing(settings.api_keys.get_secret_value())
    app.cleanup_ctx.extend([redis_ctx, celery_ctx])
    setup_routes(app)
    setup_openapi(app)
    app.router.add_get("/metrics", metrics_view)
    return app
