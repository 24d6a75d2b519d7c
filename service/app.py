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
)
from service.middlewares import auth_middleware, error_middleware
from service.publisher import TaskPublisher
from service.routes import setup_routes
from workers.celery_app import create_celery_app
from workers.redis_client import async_redis
from workers.settings import Settings

MAX_BODY_BYTES = 1024 * 1024
BLOCKING_THREADS = 16


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    client = async_redis(app[settings_key])
    app[redis_key] = client
    yield
    await client.aclose()


async def celery_ctx(app: web.Application) -> AsyncIterator[None]:
    # Celery's producer and control calls block: they run in this bounded pool.
    executor = ThreadPoolExecutor(BLOCKING_THREADS, thread_name_prefix="celery")
    celery = create_celery_app(app[settings_key])
    app[executor_key] = executor
    app[celery_key] = celery
    app[publisher_key] = TaskPublisher(celery, executor)
    yield
    executor.shutdown(wait=False, cancel_futures=True)
    celery.close()


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware, auth_middleware], client_max_size=MAX_BODY_BYTES
    )
    app[settings_key] = settings
    app[keyring_key] = KeyRing(settings.api_keys.get_secret_value())
    app.cleanup_ctx.extend([redis_ctx, celery_ctx])
    setup_routes(app)
    return app
