"""The task index: every task's record, its secondary indexes and counters,
written atomically with its state by Lua scripts (publishers, workers, the gateway).
"""
