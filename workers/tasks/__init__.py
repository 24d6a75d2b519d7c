"""Built-in tasks, one module per domain. Logic lives in plain functions; tasks are thin."""
