"""Schemas of owners' schedules (`/api/v1/schedules`): a submission fired by Beat on a cron
expression or an interval. The `arguments` are the submission endpoint's body, loaded by
that endpoint's schema (service/views/schedules.py)."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from service.schemas import StrictSchema
from service.views.submit import SUBMISSIONS

# The submission endpoints (under /api/v1/tasks/) a schedule may fire: every one.
SCHEDULABLE = tuple(SUBMISSIONS)
MAX_INTERVAL = 366 * 86400


class ScheduleRequest(StrictSchema):
    task = fields.String(
        required=True, validate=validate.OneOf(SCHEDULABLE),
        metadata={"description": "the submission it fires: `POST /api/v1/tasks/<task>`"},
    )  # fmt: skip
    arguments = fields.Dict(
        keys=fields.String(), required=True,
        metadata={
            "description": "that submission's JSON body, checked as a submission is (its "
            "knowledge bases must be the caller's); `priority` kept, no countdown, eta "
            "or webhook"
        },
    )  # fmt: skip
    cron = fields.String(
        load_default=None, validate=validate.Length(1, 200),
        metadata={"description": "minute hour day-of-month month day-of-week, e.g. "
                                 "`0 9 * * mon-fri`, read in `timezone`"},
    )  # fmt: skip
    interval = fields.Float(
        load_default=None, validate=validate.Range(min=0, max=MAX_INTERVAL, min_inclusive=False),
        metadata={"description": "seconds between firings (at least SCHEDULE_MIN_INTERVAL)"},
    )  # fmt: skip
    timezone = fields.String(
        load_default="UTC", validate=validate.Length(1, 64),
        metadata={"description": "IANA time zone of `cron` (e.g. Europe/Paris); default UTC"},
    )  # fmt: skip

    @validates_schema
    def _one_timing(self, data: dict, **_: object) -> None:
        if (data.get("cron") is None) == (data.get("interval") is None):
            raise ValidationError("give cron or interval, one of them", "cron")


class ScheduleResponse(Schema):
    id = fields.String(required=True)
    task = fields.String(required=True)
    arguments = fields.Dict(required=True)
    cron = fields.String(allow_none=True)
    interval = fields.Float(allow_none=True, metadata={"description": "seconds"})
    timezone = fields.String(required=True)
    owner = fields.String(required=True)
    created_at = fields.String(required=True, metadata={"description": "ISO 8601, UTC"})
    next_run_at = fields.String(required=True, metadata={"description": "ISO 8601, UTC"})
    last_run_at = fields.String(allow_none=True, metadata={"description": "ISO 8601, UTC"})
    runs = fields.Integer(
        required=True, metadata={"description": "firings so far, sent or skipped"}
    )  # fmt: skip
    skipped = fields.Integer(
        required=True,
        metadata={"description": "firings that sent no task: an AI task's owner over budget"},
    )  # fmt: skip
    last_firing = fields.Dict(
        allow_none=True,
        metadata={
            "description": "what the last firing did: `at`, `status` (`sent` with its "
            "`task_id`, or `skipped` with `reason` `over_budget`, a `message` and the "
            "owner's `budget` as `GET /api/v1/budgets/{owner}` shows it); null before any"
        },
    )  # fmt: skip


class ScheduleListResponse(Schema):
    schedules = fields.List(fields.Nested(ScheduleResponse), required=True)
