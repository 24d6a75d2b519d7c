"""The durable task index: every task's record and its secondary indexes, in Redis.

Written by whoever sees a task change: the publisher (in any process that imports the
Celery app: gateway, Beat, a plain Python client; see `workers.runtime.priority`) and the
workers (through the result backend, see `workers.runtime.backend`). So the history is
complete even when no gateway runs, and every gateway replica reads the same one.

Layout (the keys' builders are in `workers.core.keys`, section "Task index"):
- `claw:task:<id>`           hash: the record (`workers.taskindex.record.TaskRecord`)
- `claw:task:<id>:chunks`    list: a task's output chunks
- `claw:seq`                 counter: a monotonically increasing number per task
- `claw:idx:all`, `claw:idx:state:<S>`, `claw:idx:queue:<q>`, `claw:idx:name:<n>`,
  `claw:idx:owner:<o>`, `claw:idx:owner:<o>:state:<S>`   sorted sets of task ids scored by
  `seq` (newest = highest)
- `claw:counts`, `claw:counts:owner:<o>`, `claw:counts:queue:<q>`   hashes: tasks per state
- `claw:expiry`              sorted set: id -> when its record may be pruned
- `claw:done:<minute>`       counters: tasks finished per minute (throughput)
- `claw:feed`                stream: the live feed of task events

Every state change is one Lua script (workers/taskindex/scripts/record.lua), so indexes
and counts move together, and a stale update (a STARTED arriving after SUCCESS, an attempt
older than the current one) cannot overwrite a newer state.
"""

from __future__ import annotations

import time
from typing import Any

from workers.core.keys import (
    FEED_MAXLEN,
    FEED_STREAM,
    PREFIX,
    counts_key,
    done_key,
    index_key,
    owner_state_key,
    task_key,
)
from workers.taskindex.lua_scripts import (
    CLAIM_CANCELLED,
    CLAIM_DONE,
    CLAIM_DUPLICATE,
    CLAIM_FRESH,
    CLAIM_RUN,
    RecordUpdate,
    feed_call,
    prune_call,
    refresh_call,
    source,
)
from workers.taskindex.record import (
    ARGS_CAP,
    PREVIEW_CAP,
    STATES,
    TERMINAL_STATES,
    capped_json,
    preview,
)

# Names importers of this module have used; their one definition is where they come from.
__all__ = [
    "ARGS_CAP", "CLAIM_CANCELLED", "CLAIM_DONE", "CLAIM_DUPLICATE", "CLAIM_FRESH",
    "CLAIM_RUN", "DEFAULT_TTL", "FEED_MAXLEN", "FEED_STREAM", "PREFIX",
    "PREVIEW_CAP", "STATES", "TERMINAL_STATES", "TaskIndex", "capped_json", "counts_key",
    "done_key", "index_key", "owner_state_key", "preview", "task_key",
]  # fmt: skip

DEFAULT_TTL = 7 * 24 * 3600


class TaskIndex:
    """The blocking writer used by publishers and workers."""

    def __init__(self, client: Any, ttl: int = DEFAULT_TTL) -> None:
        self.client = client
        self.ttl = ttl
        self._record = client.register_script(source("record"))
        self._refresh = client.register_script(source("refresh"))
        self._feed = client.register_script(source("feed"))
        self._prune = client.register_script(source("prune"))

    def record(
        self,
        task_id: str,
        state: str | None,
        attempt: int | None = None,
        now: float | None = None,
        event: dict[str, Any] | None = None,
        **fields: Any,
    ) -> list[Any]:
        """Apply a state (or none) and fields to a task's record, creating it if new.

        `event` adds fields to the feed event sent when the state changes (a result, an
        error, the worker).
        """
        return self.apply(
            RecordUpdate(
                task_id=task_id,
                state=state,
                attempt=attempt,
                fields=fields,
                event=event,
                ttl=self.ttl,
                now=now,
            )
        )

    def apply(self, update: RecordUpdate) -> list[Any]:
        """Write one update of a record (record.lua); returns [applied, before, after]."""
        keys, args = update.call()
        return list(self._record(keys=keys, args=args))

    def feed(
        self, kind: str, task_id: str, payload: dict[str, Any] | None = None, chunk: str = ""
    ) -> tuple[int, str]:
        """Append a task-scoped event (progress, chunk) to the feed."""
        keys, args = feed_call(kind, task_id, payload, chunk, time.time())
        index, event_id = self._feed(keys=keys, args=args)
        return int(index), event_id

    def waiting(self, task_id: str, reason: str, eta: str) -> None:
        """A delivery put back until it may run (its rate limit): why and until when, in
        the record (`waiting_reason`, `eta`, one more `deferrals`) and as a `waiting`
        event in the feed, together (MULTI)."""
        update = RecordUpdate(
            task_id=task_id, state=None, attempt=None, ttl=self.ttl,
            fields={"waiting_reason": reason, "eta": eta}, event=None,
        )  # fmt: skip
        keys, args = update.call()
        feed_keys, feed_args = feed_call(
            "waiting", task_id, {"reason": reason, "eta": eta}, "", time.time()
        )
        with self.client.pipeline() as pipe:
            self._record(keys=keys, args=args, client=pipe)
            pipe.hincrby(task_key(task_id), "deferrals", 1)
            self._feed(keys=feed_keys, args=feed_args, client=pipe)
            pipe.execute()

    def refresh(self, claims: list[tuple[str, str]]) -> None:
        """Keep the claims (task id, token) of running tasks fresh."""
        if not claims:
            return
        now = time.time()
        with self.client.pipeline(transaction=False) as pipe:
            for task_id, token in claims:
                keys, args = refresh_call(task_id, token, now)
                self._refresh(keys=keys, args=args, client=pipe)
            pipe.execute()

    def release(self, task_id: str) -> None:
        """Let any worker run the task again (its worker process died mid-run)."""
        self.client.hset(task_key(task_id), mapping={"claimed": "0", "claimed_by": ""})

    def count_worker_loss(self, task_id: str) -> int:
        """One more death of a worker process while running the task; the new total."""
        return int(self.client.hincrby(task_key(task_id), "worker_losses", 1))

    def prune(self, now: float | None = None, batch: int = 500) -> int:
        """Remove every record whose retention has passed, with its index entries."""
        now = now if now is not None else time.time()
        removed = 0
        while True:
            keys, args = prune_call(now, batch)
            gone = int(self._prune(keys=keys, args=args))
            removed += gone
            if gone < batch:
                return removed
