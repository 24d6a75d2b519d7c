"""Every built-in task lands in its queue's Redis list, and only there."""

from __future__ import annotations

import pytest
import redis

from workers.core import queues
from workers.core.settings import load_settings
from workers.runtime.celery_config import create_celery_app
from workers.runtime.queue_depth import queue_depths

ROUTING_DB = 18


@pytest.fixture
def isolated(redis_server):
    """A Celery app on a database no worker consumes, so published messages stay put."""
    url = f"redis://127.0.0.1:{redis_server.port}/{ROUTING_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    app = create_celery_app(load_settings(redis_url=url))
    yield app, client
    app.close()
    client.flushdb()
    client.close()


@pytest.mark.parametrize(("task_name", "queue"), sorted(queues.TASK_QUEUES.items()))
def test_built_in_task_is_published_to_its_queue(isolated, task_name: str, queue: str) -> None:
    app, client = isolated
    app.send_task(task_name, kwargs={})  # by name, no queue given: routing decides
    depths = queue_depths(client)
    assert depths == {name: int(name == queue) for name in queues.QUEUES}


def test_a_task_without_a_route_goes_to_default(isolated) -> None:
    app, client = isolated
    app.send_task("some.other.task")
    assert queue_depths(client)["default"] == 1


def test_every_built_in_task_is_registered_with_its_route(celery_app) -> None:
    celery_app.loader.import_default_modules()
    for name, queue in queues.TASK_QUEUES.items():
        assert name in celery_app.tasks
        assert celery_app.amqp.router.route({}, name)["queue"].name == queue


def test_source_rate_limits_are_declared(celery_app) -> None:
    celery_app.loader.import_default_modules()
    assert celery_app.tasks[queues.GENERATE_AI_RESPONSE].rate_limit == "10/m"
    assert celery_app.tasks[queues.VECTORIZE_DOCUMENT].rate_limit == "5/m"


def test_configuration_from_the_source(celery_app) -> None:
    conf = celery_app.conf
    assert (conf.task_soft_time_limit, conf.task_time_limit) == (300, 600)
    assert conf.result_expires == 3600
    assert conf.worker_concurrency == 4
    assert conf.worker_max_tasks_per_child == 100
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.accept_content == ["json"] and conf.task_serializer == "json"
    assert conf.task_track_started and conf.task_send_sent_event
    assert conf.worker_send_task_events and conf.worker_pool_restarts
    assert conf.broker_transport_options["visibility_timeout"] > conf.task_time_limit
    schedule = conf.beat_schedule
    assert schedule["cleanup-expired-results"]["task"] == queues.CLEANUP_EXPIRED_RESULTS
    assert str(schedule["cleanup-expired-results"]["schedule"]) == str(
        __import__("celery").schedules.crontab(hour=2, minute=0)
    )
    assert schedule["check-task-status"]["task"] == queues.CHECK_TASK_HEALTH
    assert schedule["check-task-status"]["schedule"]._orig_minute == "*/30"
