"""Benchmarks run by hand: the platform against plain Celery and Flower (see README.md)."""
