"""The status document (workers/taskindex/status.py) and the API's schema of it name the
same fields: what a webhook is sent and what `GET /status/{id}` answers cannot drift."""

from __future__ import annotations

import json

import pytest

from service.schemas import TaskStatusResponse, TaskSummary
from workers.taskindex.record import KINDS, decode_hash, encode_fields
from workers.taskindex.status import ROW_FIELDS, STATUS_FIELDS, status_document, summarize


def test_the_document_and_the_api_schema_have_the_same_fields() -> None:
    assert set(STATUS_FIELDS) == set(TaskStatusResponse().fields)
    assert len(STATUS_FIELDS) == len(set(STATUS_FIELDS))
    assert set(ROW_FIELDS) == set(TaskSummary().fields)
    assert len(ROW_FIELDS) == len(set(ROW_FIELDS))


def test_a_finished_record_with_its_meta_makes_the_document() -> None:
    record = {"task_id": "t", "state": "SUCCESS", "started_at": 10.0, "finished_at": 12.5,
              "traceback": "tb", "claimed_by": "t", "webhook_events": ",completed,"}  # fmt: skip
    meta = {"status": "SUCCESS", "result": {"ok": 1}, "date_done": "2026-12-04T00:00:00"}
    doc = status_document(record, meta, admin=False)
    assert doc["status"] == "SUCCESS" and doc["result"] == {"ok": 1} and doc["runtime"] == 2.5
    assert "traceback" not in doc and "claimed_by" not in doc and "webhook_events" not in doc
    assert status_document(record, meta, admin=True)["traceback"] == "tb"


def _stored(fields: dict) -> dict:
    """A record as the gateway reads it: written in the index's text form, decoded back."""
    flat = encode_fields(fields)
    return decode_hash(dict(zip(flat[::2], flat[1::2], strict=True)))


FULL_RECORD = {
    "task_id": "t-1", "seq": 7, "state": "SUCCESS", "attempt": 1, "created_at": 1.0,
    "updated_at": 2.0, "finished_at": 1764806400.25, "name": "ai.generate", "queue": "q",
    "priority": 9, "owner": "alice", "submitted_at": 1764806399.5, "eta": "2026-12-04T00:00:00",
    "timelimit": [60.0, None], "args": ["a", 1], "kwargs": {"k": [1, 2]},
    "args_truncated": False, "retried_from": "t-0", "trace_id": "ab" * 16, "retries": 2,
    "worker": "w@h", "started_at": 1764806400.0, "result_preview": "1", "error_type": "E",
    "error_message": "m", "traceback": "Traceback...", "progress": {"percent": 40.0,
    "message": "batch 2"}, "claimed": True, "claimed_by": "tok", "claimed_at": 3.0,
    "deliveries": 1, "worker_losses": 0, "cancel_requested": False, "recovered_at": 4.0,
    "retried_as": "t-2", "waiting_reason": "rate limit", "deferrals": 3, "confirm_by": 5.0,
    "webhook": {"url": "http://x", "events": ["completed"]}, "webhook_events": ",completed,",
    "schedule_id": "s", "tags": ["a", "b"], "metadata": {"customer": "c", "n": 1},
    "labels": "x", "batch_id": "b", "model": "gpt", "prompt_tokens": 10,
    "completion_tokens": 20, "cost": 0.5, "cost_priced": True, "ttft_ms": 120.5,
}  # fmt: skip


@pytest.mark.parametrize("state", ["PENDING", "STARTED", "SUCCESS", "FAILURE", "REVOKED"])
@pytest.mark.parametrize("admin", [False, True])
def test_the_document_is_already_what_the_schema_dumps(state: str, admin: bool) -> None:
    """`GET /status/{id}` answers the document and `GET /list` the rows as they are (no
    marshmallow dump per request): every value must already have the type and shape the
    schemas give it."""
    assert set(FULL_RECORD) == set(KINDS), "a new record field: add it above"
    meta = {"status": state, "result": {"ok": [1, 2]}, "date_done": "2026-12-04T00:00:01"}
    for record in (
        _stored({**FULL_RECORD, "state": state}),
        _stored({"task_id": "t", "state": state}),
    ):
        doc = status_document(record, meta, admin=admin)
        doc["queue_state"] = {"queue": "q", "waiting": 3, "consumers": 0}
        assert TaskStatusResponse().dump(doc) == doc
        assert json.loads(json.dumps(doc)) == doc
        row = summarize(record)  # a row of a task list or a batch's items
        assert TaskSummary().dump(row) == row
        assert json.loads(json.dumps(row)) == row
