"""Request and response schemas: the API contract (and later its OpenAPI document)."""

from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from workers.priority import MAX_PRIORITY, MIN_PRIORITY


class SubmitOptions(Schema):
    """Scheduling options every submission accepts."""

    priority = fields.Integer(
        load_default=None,
        validate=validate.Range(MIN_PRIORITY, MAX_PRIORITY),
        metadata={"description": "0-9, 9 runs first"},
    )
    countdown = fields.Float(load_default=None, validate=validate.Range(min=0, max=30 * 86400))
    eta = fields.AwareDateTime(load_default=None, default_timezone=None)

    @validates_schema
    def _one_delay(self, data: dict, **_: object) -> None:
        if data.get("countdown") is not None and data.get("eta") is not None:
            raise ValidationError("give countdown or eta, not both", "eta")


class AiGenerateRequest(SubmitOptions):
    conversation_id = fields.String(required=True, validate=validate.Length(1, 200))
    user_message = fields.String(required=True, validate=validate.Length(1, 32_000))
    temperature = fields.Float(load_default=0.7, validate=validate.Range(0, 2))
    user_id = fields.String(load_default=None, validate=validate.Length(1, 200))
    model = fields.String(load_default=None, validate=validate.Length(1, 200))
    max_tokens = fields.Integer(load_default=None, validate=validate.Range(1, 128_000))


class SubmitResponse(Schema):
    task_id = fields.String(required=True)
    status = fields.String(required=True)
    message = fields.String(required=True)
