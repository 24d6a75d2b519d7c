"""CLAW.AI workers: the Celery app, its queues and the built-in tasks."""
