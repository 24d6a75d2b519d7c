"""The platform's Celery plumbing: the task base and request, the result backend,
the transport, signal receivers, claims, recovery, the worker registry, rate limits.
"""
