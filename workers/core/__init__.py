"""The shared core: settings, Redis clients, queue names, key and header names.

Importing it never connects to Redis, never exits the process and never registers
Celery signal handlers: the gateway and the workers both build on it.
"""
