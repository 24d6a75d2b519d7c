"""Schemas of the batches API (`/api/v1/batches`, service/views/batches.py)."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from service.schemas import StrictSchema, TaskSummary
from workers.taskindex.record import STATES


class BatchCreateQuery(StrictSchema):
    webhook = fields.Url(
        load_default=None, schemes={"http", "https"}, require_tld=False,
        validate=validate.Length(max=2000),
        metadata={"description": "POSTed the batch's status when every item has ended "
                  "(signed per Standard Webhooks, docs/webhooks.md)"},
    )  # fmt: skip


class BatchQuery(StrictSchema):
    limit = fields.Integer(load_default=50, validate=validate.Range(1, 500))
    cursor = fields.Integer(load_default=None, validate=validate.Range(min=0))
    status = fields.String(
        load_default=None, validate=validate.OneOf(STATES),
        metadata={"description": "only the items in this state"},
    )  # fmt: skip


class BatchSubmitResponse(Schema):
    batch_id = fields.String(required=True)
    status = fields.String(required=True)
    total = fields.Integer(required=True, metadata={"description": "items accepted"})
    message = fields.String()


class BatchResponse(Schema):
    batch_id = fields.String(required=True)
    status = fields.String(
        required=True, metadata={"description": "the batch's own task: SUCCESS once every "
                                 "item has ended, REVOKED if cancelled"},
    )  # fmt: skip
    total = fields.Integer(required=True)
    published = fields.Integer(required=True, metadata={"description": "items submitted"})
    ended = fields.Integer(required=True, metadata={"description": "items finished"})
    counts = fields.Dict(
        keys=fields.String(), values=fields.Integer(), required=True,
        metadata={"description": "items per state"},
    )  # fmt: skip
    cancelled = fields.Boolean(required=True)
    submitted_at = fields.String(allow_none=True)
    finished_at = fields.String(allow_none=True)
    items = fields.List(fields.Nested(TaskSummary), required=True)
    next_cursor = fields.String(allow_none=True, required=True)


class BatchCancelResponse(Schema):
    batch_id = fields.String(required=True)
    status = fields.String(required=True)
    bulk_task_id = fields.String(
        required=True, metadata={"description": "the bulk cancel of its items not started"}
    )
