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


def summarize(record: dict[str, Any]) -> dict[str, Any]:
    """A record with the API's derived fields (`status`, `runtime`, `error`)."""
    started, finished = record.get("started_at"), record.get("finished_at")
    return {
        **record,
        **{name: iso(record[name]) for name in TIME_FIELDS if name in record},
        "status": record.get("state"),
        "runtime": round(finished - started, 6) if started and finished else None,
        "error": record.get("error_message"),
        "waiting_reason": record.get("waiting_reason") or None,
    }


def status_document(
    record: dict[str, Any], meta: dict[str, Any] | None, *, admin: bool
) -> dict[str, Any]:
    """The status of a task from its record and Celery's result meta; the traceback for
    admins only. Only STATUS_FIELDS, those the record has."""
    body = summarize(record)
    meta_state = (meta or {}).get("status")
    if meta_state in TERMINAL_STATES and body["status"] not in TERMINAL_STATES:
        # The backend's write lands a moment before the index's.
        body["status"] = meta_state
    result = meta.get("result") if meta else None
    body["result"] = result if body["status"] == "SUCCESS" else None
    body["date_done"] = (meta or {}).get("date_done") or iso(record.get("finished_at"))
    if not admin:
        body.pop("traceback", None)
    return {name: body[name] for name in STATUS_FIELDS if name in body}
