"""A task's status document: what `GET /api/v1/tasks/status/{id}` answers (the gateway
dumps it with its schema, service/schemas.py `TaskStatusResponse`) and what a task's
webhook is sent (workers/tasks/webhooks.py). One definition, so the two agree."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from workers.taskindex.record import TERMINAL_STATES

# Every field of the document (tests/workers/taskindex/test_status_document.py checks
# that the API's schema names the same). Not `result_preview`: the document has `result`
# itself (task lists, which do not, carry the preview).
STATUS_FIELDS = (
    "task_id", "status", "name", "queue", "priority", "owner", "submitted_at", "started_at",
    "finished_at", "runtime", "retries", "worker", "error", "waiting_reason", "result",
    "date_done", "error_type", "traceback", "progress", "args", "kwargs", "eta",
    "deferrals", "retried_from", "retried_as", "queue_state",
    "schedule_id", "tags", "metadata", "batch_id",
    # An AI task's usage (`workers.ai.usage`).
    "model", "prompt_tokens", "completion_tokens", "cost", "cost_priced", "ttft_ms",
    # The trace of its submission (OpenTelemetry), while tracing is on.
    "trace_id",
)  # fmt: skip


# The times of a task, kept as epoch seconds in its record, answered as ISO 8601 (UTC):
# one format for every time the API and the feeds show.
TIME_FIELDS = ("submitted_at", "started_at", "finished_at")


def iso(ts: float | None) -> str | None:
    """Epoch seconds as ISO 8601 in UTC (None stays None)."""
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts else None


def on_the_wire(event: dict[str, Any]) -> dict[str, Any]:
    """A logged or feed event as clients get it: its `ts` (epoch seconds, as the index's
    scripts write it) in ISO 8601. Changes `event` and returns it."""
    if isinstance(event.get("ts"), int | float):
        event["ts"] = iso(event["ts"])
    return event


# Every field of a row of a task list (`TaskSummary`; the test of the document checks
# that the schema names the same).
ROW_FIELDS = (
    "task_id", "status", "name", "queue", "priority", "owner", "submitted_at", "started_at",
    "finished_at", "runtime", "retries", "worker", "error", "result_preview",
    "waiting_reason", "retried_from", "schedule_id", "retried_as", "tags", "metadata",
    "batch_id",
)  # fmt: skip
# What the record does not hold as it is shown: derived from it, or from the result.
_DERIVED = frozenset({"status", "runtime", "error", "waiting_reason", "result", "date_done",
                      *TIME_FIELDS})  # fmt: skip
_ROW_AS_STORED = frozenset(ROW_FIELDS) - _DERIVED
_STATUS_AS_STORED = frozenset(STATUS_FIELDS) - _DERIVED


def _shown(record: dict[str, Any], as_stored: frozenset[str]) -> dict[str, Any]:
    """The fields of `as_stored` the record has, its times in ISO 8601 and the derived
    `status`, `runtime`, `error` and `waiting_reason`.

    Built field by field and never dumped again by a schema (its values are typed as the
    schemas type them; tests/workers/taskindex/test_status_document.py): this answers every
    status request, list row and webhook, and a schema's dump cost more than the rest of a
    status request's own work."""
    body = {name: value for name, value in record.items() if name in as_stored}
    for name in TIME_FIELDS:
        if name in record:
            body[name] = iso(record[name])
    started, finished = record.get("started_at"), record.get("finished_at")
    body["status"] = record.get("state")
    body["runtime"] = round(finished - started, 6) if started and finished else None
    body["error"] = record.get("error_message")
    body["waiting_reason"] = record.get("waiting_reason") or None
    return body


def summarize(record: dict[str, Any]) -> dict[str, Any]:
    """A task list's row of a record: ROW_FIELDS, those it has and the derived ones."""
    return _shown(record, _ROW_AS_STORED)


def status_document(
    record: dict[str, Any], meta: dict[str, Any] | None, *, admin: bool
) -> dict[str, Any]:
    """The status of a task from its record and Celery's result meta; the traceback for
    admins only. Only STATUS_FIELDS, those the record has and the derived ones."""
    body = _shown(record, _STATUS_AS_STORED)
    meta_state = meta.get("status") if meta else None
    if meta_state in TERMINAL_STATES and body["status"] not in TERMINAL_STATES:
        # The backend's write lands a moment before the index's.
        body["status"] = meta_state
    body["result"] = meta.get("result") if meta and body["status"] == "SUCCESS" else None
    body["date_done"] = (meta.get("date_done") if meta else None) or iso(record.get("finished_at"))
    if not admin:
        body.pop("traceback", None)
    return body
