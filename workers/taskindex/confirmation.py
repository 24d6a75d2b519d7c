"""Replica acknowledgement of a publish (REDIS_REPLICA_ACKS), shared by the gateway's and
our Celery app's publishers and read by the workers.

A publisher writes the task (record and message) and then asks Redis to WAIT until
enough replicas hold it; only then is the task accepted. Meanwhile a worker could already
take the message, so the record carries `confirm_by`: no delivery runs before that time
unless the publisher has confirmed the task (and removed the field). A task the replicas
did not take in time is refused (revoked) before `confirm_by`, so it never runs.
"""

from __future__ import annotations

import dataclasses
import time

from workers.taskindex.lua_scripts import RecordUpdate

# Time past the WAIT's own timeout for the publisher to write its refusal.
REFUSAL_MARGIN = 2.0
FIELD = "confirm_by"
REASON = "waiting for its publisher's replica acknowledgement"


def unconfirmed(update: RecordUpdate, timeout_ms: int) -> RecordUpdate:
    """The publish's record update, held until confirmed (see the module)."""
    confirm_by = time.time() + timeout_ms / 1000 + REFUSAL_MARGIN
    return dataclasses.replace(update, fields={**update.fields, FIELD: confirm_by})


def hold_left(confirm_by: bytes | str | None, now: float | None = None) -> float:
    """Seconds a delivery must still wait for its publisher's confirmation (0: none)."""
    if not confirm_by:
        return 0.0
    left = float(confirm_by) - (time.time() if now is None else now)
    return max(0.0, left)
