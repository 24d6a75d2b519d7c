"""A task that opts out of the platform's delivery guarantees (`base=celery.Task`), loaded
only by the worker of the test that checks the start-up warning naming it."""

from __future__ import annotations

from celery import Task

from workers.celery_app import celery_app


@celery_app.task(name="tests.opted_out", base=Task)
def opted_out() -> str:
    return "ran without the platform's guarantees"


@celery_app.task(name="tests.unclaimed", ignore_result=True)
def unclaimed() -> str:
    return "ran without a claim"
