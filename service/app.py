"""The application factory: `create_app(settings)`, used by `__main__` and the tests."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from aiohttp import web
from swagger_ui_bundle import swagger_ui_path

from service.auth import KeyRing
from service.coverage import coverage_cache_key
from service.feed import FeedHub
from service.keys import (
    celery_key,
    executor_key,
    feed_key,
    keyring_key,
    publisher_key,
    redis_key,
    redis_pipe_key,
    sessions_key,
    settings_key,
    sync_redis_key,
    task_store_key,
    waiter_key,
)
from service.metrics import Metrics, metrics_key, metrics_view
from service.middlewares import (
    METRICS_PATH,
    admin_paths_key,
    gateway_middleware,
    public_routes_key,
)
from service.openapi import setup_openapi
from service.publisher import TaskPublisher
from service.redis_pipe import RedisPipe, pipelinable
from service.routes import admin_paths, public_routes, setup_routes
from service.sessions import SessionStore
from service.task_store import TaskStore
from service.views import pages
from service.views.tasks import compute_stats
from service.waiter import ResultWaiter
from workers.core.redis_client import async_redis, sync_redis
from workers.core.settings import Settings
from workers.runtime.celery_config import create_celery_app
from workers.runtime.internals import check_internals

MAX_BODY_BYTES = 1024 * 1024
BLOCKING_THREADS = 16


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[settings_key]
    client = async_redis(settings)
    app[redis_key] = client
    app[sync_redis_key] = sync_redis(settings)
    # The hot paths' commands on one auto-pipelined connection (not under TLS).
    pipe = RedisPipe(client) if pipelinable(client) else None
    if pipe is not None:
        app[redis_pipe_key] = pipe
    store = TaskStore(client, ttl=settings.task_history_ttl, pipe=pipe)
    app[task_store_key] = store
    refusals = asyncio.get_running_loop().create_task(store.retry_refusals())
    waiter = ResultWaiter(client)
    await waiter.start()
    app[waiter_key] = waiter
    app[sessions_key] = SessionStore(client, settings.session_ttl)
    yield
    refusals.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await refusals
    await waiter.close()
    if pipe is not None:
        await pipe.aclose()
    await client.aclose()
    app[sync_redis_key].close()


async def feed_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[settings_key]
    # Its own connections: the stream read blocks one while it waits. The readers' are not
    # retried unseen: they check the stream's history after each reconnection (a failover).
    client = async_redis(settings)
    reader = async_redis(settings, retry=False)
    hub = FeedHub(
        client,
        reader=reader,
        db=redis_db(settings.redis_url),
        buffer=settings.ws_buffer,
        stats_interval=settings.ws_stats_interval,
        stats=functools.partial(compute_stats, app),
        sessions=app[sessions_key],
        limits={
            "task_ids": settings.ws_max_task_ids,
            "queues": settings.ws_max_names,
            "names": settings.ws_max_names,
        },
    )
    await hub.start()
    app[feed_key] = hub
    yield
    await hub.stop()
    await client.aclose()
    await reader.aclose()


async def close_websockets(app: web.Application) -> None:
    """On shutdown: every websocket is closed with 1001 (going away) before cleanup."""
    if feed_key in app:
        await app[feed_key].stop()


def redis_db(url: str) -> int:
    path = urlsplit(url.split(";")[0]).path.strip("/")
    return int(path) if path.isdigit() else 0


async def celery_ctx(app: web.Application) -> AsyncIterator[None]:
    # Celery's control calls block: they run in this bounded pool.
    executor = ThreadPoolExecutor(BLOCKING_THREADS, thread_name_prefix="celery")
    celery = create_celery_app(app[settings_key])
    # The gateway reads results from Redis itself. Celery's Redis backend would subscribe
    # to the result channel of every task sent, for an AsyncResult.get() never called.
    celery.conf["result_backend"] = "disabled"
    app[executor_key] = executor
    app[celery_key] = celery
    settings = app[settings_key]
    publisher = TaskPublisher(
        celery, app[redis_key], ttl=settings.task_history_ttl, pipe=app.get(redis_pipe_key),
        replica_acks=settings.redis_replica_acks,
        replica_ack_timeout_ms=settings.redis_replica_ack_timeout_ms,
    )  # fmt: skip
    await publisher.start(executor)
    app[publisher_key] = publisher
    yield
    publisher.close()
    executor.shutdown(wait=False, cancel_futures=True)
    celery.close()


async def freeze_heap(app: web.Application) -> None:
    """Once started: what the imports and set-up left lives as long as the process, so it
    is collected once and frozen, and the occasional full collection (tens of ms over
    ~100,000 objects, a pause for every request in flight) skips it."""
    gc.collect()
    gc.freeze()


STATIC_PREFIX = "/static/"
API_DOCS_ASSETS = "/api/docs/static"


def create_app(settings: Settings, *, metrics_dir: str | None = None) -> web.Application:
    """The gateway; `metrics_dir` is where its processes share metrics when it runs in several
    (see service/server.py)."""
    # The publisher relies on kombu internals: refuse to serve without them.
    check_internals()
    app = web.Application(
        middlewares=[gateway_middleware],
        client_max_size=MAX_BODY_BYTES,
    )
    app[settings_key] = settings
    app[metrics_key] = Metrics(multiprocess_dir=metrics_dir)
    app[keyring_key] = KeyRing(settings.api_keys.get_secret_value())
    app[coverage_cache_key] = {}
    app[admin_paths_key] = admin_paths() | {METRICS_PATH}
    page_routes = {("GET", "/"), ("GET", "/tasks/{task_id}"), ("GET", "/login"),
                   ("GET", "/api/docs"), ("GET", STATIC_PREFIX.rstrip("/")),
                   ("GET", API_DOCS_ASSETS)}  # fmt: skip
    app[public_routes_key] = public_routes() | page_routes
    app.cleanup_ctx.extend([redis_ctx, celery_ctx, feed_ctx])
    app.on_startup.append(freeze_heap)
    app.on_shutdown.append(close_websockets)
    setup_routes(app)
    setup_openapi(app)
    app.router.add_get(METRICS_PATH, metrics_view)
    app.router.add_get("/", pages.index)
    app.router.add_get("/tasks/{task_id}", pages.index)  # a deep link to a task's detail
    app.router.add_get("/login", pages.login_page)
    app.router.add_static(STATIC_PREFIX, pages.STATIC, append_version=True)
    app.router.add_get("/api/docs", pages.api_docs)
    app.router.add_static(API_DOCS_ASSETS, swagger_ui_path)  # Swagger UI's own files
    return app
