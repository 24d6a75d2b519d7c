"""The Celery configuration: broker, queues, routing, limits, schedule, as data.

`create_celery_app(settings)` builds an app without side effects (the gateway publishes
with one); `workers.celery_app` is the entry point that workers, Beat and Flower load.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit, urlunsplit

from celery import Celery
from celery.schedules import crontab
from kombu import Exchange, Queue

from workers.core import queues
from workers.core.keys import REDBEAT_PREFIX
from workers.core.redis_client import SOCKET_TIMEOUT, parse_sentinel_url
from workers.core.settings import Settings
from workers.runtime import priority
from workers.runtime.backend import backend_url

TASK_MODULES = [
    "workers.tasks.ai",
    "workers.tasks.knowledge",
    "workers.tasks.notifications",
    "workers.tasks.maintenance",
    "workers.tasks.webhooks",
    "workers.tasks.bulk",
    "workers.tasks.batches",
]


def celery_config(settings: Settings) -> dict:
    """Celery settings derived from ours (lowercase Celery names)."""
    transport_options = {
        "priority_steps": priority.PRIORITY_STEPS,
        "sep": ":",
        "visibility_timeout": settings.broker_visibility_timeout,
        # Sweep for messages of dead workers every few seconds (kombu's default is
        # ~100 s: 10 s interval x throttle 10), sooner with a short visibility timeout.
        "unacked_restore_interval": max(1, min(10, settings.broker_visibility_timeout // 4)),
        "unacked_restore_throttle": 1,
        # The sweep's lock; a crash can leave it behind (kombu's default holds it 300 s).
        "unacked_mutex_expire": 20,
        "health_check_interval": 15,
        "socket_keepalive": True,
    }
    backend_options: dict = {}
    # RedBeat's own Redis options (explicit, so it does not borrow the broker's). Its URL
    # goes without the password: `inspect conf` (Flower, the gateway) shows the URL as is,
    # but masks option keys that say "password".
    redbeat_url, redbeat_options = _split_password(settings.redis_url)
    if settings.redis_url.startswith("sentinel://"):
        transport_options["master_name"] = settings.redis_sentinel_master
        backend_options["master_name"] = settings.redis_sentinel_master
        # RedBeat spells Sentinel `redis-sentinel://` and takes the sentinels as options.
        target = parse_sentinel_url(settings.redis_url)
        redbeat_url = "redis-sentinel://{}:{}".format(*target.sentinels[0])
        redbeat_options = {
            "sentinels": target.sentinels,
            "service_name": settings.redis_sentinel_master,
            "password": target.password,
            "db": target.db,
            "socket_timeout": SOCKET_TIMEOUT,
        }
    exchange = Exchange("tasks", type="direct")
    return {
        "broker_url": settings.redis_url,
        "broker_transport": priority.transport_for(settings.redis_url),
        "broker_transport_options": transport_options,
        "broker_connection_retry_on_startup": True,
        # A publish while Redis is down gives up within about a second: the gateway
        # answers 503 instead of hanging.
        "task_publish_retry_policy": {
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.3,
            "interval_max": 0.5,
        },
        "result_backend": backend_url(settings.redis_url),
        "result_backend_transport_options": backend_options,
        "result_expires": settings.result_expires,
        # A result write during a Redis outage waits for Redis to come back instead of
        # turning a finished task into a FAILURE.
        "result_backend_always_retry": True,
        "result_backend_max_retries": 30,
        "result_backend_max_sleep_between_retries_ms": 2000,
        "result_extended": True,
        # JSON only: a pickle message is refused by every worker.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "event_serializer": "json",
        "timezone": "UTC",
        "enable_utc": True,
        "task_queues": [Queue(name, exchange, routing_key=name) for name in queues.QUEUES],
        "task_default_queue": queues.DEFAULT,
        "task_default_exchange": exchange.name,
        "task_default_routing_key": queues.DEFAULT,
        # Routes also carry the default priority: kombu would publish "none given" as 0,
        # which is the lowest. An explicit priority from the caller wins over the route.
        "task_routes": (
            {
                name: {
                    "queue": queues.TASK_QUEUES[queues.canonical_name(name)],
                    "priority": priority.DEFAULT_PRIORITY,
                }
                for name in (*queues.TASK_QUEUES, *queues.DOCUMENT_ALIASES)
            },
            {"*": {"priority": priority.DEFAULT_PRIORITY}},
        ),
        "task_default_priority": priority.DEFAULT_PRIORITY,
        "task_soft_time_limit": settings.task_soft_time_limit,
        "task_time_limit": settings.task_time_limit,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_track_started": True,
        "task_send_sent_event": True,
        "worker_send_task_events": True,
        "worker_concurrency": settings.worker_concurrency,
        "worker_max_tasks_per_child": settings.worker_max_tasks_per_child,
        # One message at a time per process: priorities hold and long jobs don't hoard.
        "worker_prefetch_multiplier": settings.worker_prefetch_multiplier,
        "worker_pool_restarts": True,
        # Celery's rate_limit counts per worker process; the declared limits are enforced
        # platform-wide through Redis instead (workers/runtime/rate_limit.py).
        "worker_disable_rate_limits": True,
        "worker_hijack_root_logger": False,
        # RedBeat keeps the schedule in Redis behind a lock: one Beat acts at a time.
        "beat_scheduler": "workers.runtime.beat:ResilientRedBeatScheduler",
        "redbeat_redis_url": redbeat_url,
        "redbeat_redis_options": redbeat_options,
        "redbeat_key_prefix": REDBEAT_PREFIX,
        "redbeat_lock_timeout": 30,
        "beat_max_loop_interval": 5,
        "beat_schedule": {
            "cleanup-expired-results": {
                "task": queues.CLEANUP_EXPIRED_RESULTS,
                "schedule": crontab(hour=2, minute=0),
            },
            "check-task-status": {
                "task": queues.CHECK_TASK_HEALTH,
                "schedule": crontab(minute="*/30"),
            },
            # (Messages lost between a worker's BRPOP and its bookkeeping are rebuilt by
            # the workers themselves: workers/runtime/housekeeping.py.)
        },
    }


def _split_password(url: str) -> tuple[str, dict]:
    """The URL without its password, and the password as a client option."""
    parts = urlsplit(url)
    if parts.password is None:
        return url, {}
    user = f"{parts.username}@" if parts.username else ""
    netloc = f"{user}{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc)), {"password": unquote(parts.password)}


def create_celery_app(settings: Settings) -> Celery:
    # Every task on the app gets the delivery contract, plain `@app.task` and
    # `@shared_task` too. A path, resolved when the first task is made: no import here.
    app = Celery("claw_ai", include=TASK_MODULES, task_cls="workers.runtime.base:PlatformTask")
    app.conf.update(celery_config(settings))
    return app
