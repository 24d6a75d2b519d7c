"""The status document (workers/taskindex/status.py) and the API's schema of it name the
same fields: what a webhook is sent and what `GET /status/{id}` answers cannot drift."""

from __future__ import annotations

from service.schemas import TaskStatusResponse
from workers.taskindex.status import STATUS_FIELDS, status_document


def test_the_document_and_the_api_schema_have_the_same_fields() -> None:
    assert set(STATUS_FIELDS) == set(TaskStatusResponse().fields)
    assert len(STATUS_FIELDS) == len(set(STATUS_FIELDS))


def test_a_finished_record_with_its_meta_makes_the_document() -> None:
    record = {"task_id": "t", "state": "SUCCESS", "started_at": 10.0, "finished_at": 12.5,
              "traceback": "tb", "claimed_by": "t", "webhook_events": ",completed,"}  # fmt: skip
    meta = {"status": "SUCCESS", "result": {"ok": 1}, "date_done": "2026-12-04T00:00:00"}
    doc = status_document(record, meta, admin=False)
    assert doc["status"] == "SUCCESS" and doc["result"] == {"ok": 1} and doc["runtime"] == 2.5
    assert "traceback" not in doc and "claimed_by" not in doc and "webhook_events" not in doc
    assert status_document(record, meta, admin=True)["traceback"] == "tb"
