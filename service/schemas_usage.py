"""Schemas of AI usage (`GET /api/v1/usage`) and budgets (`/api/v1/budgets/{owner}`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validate

from service.schemas import StrictSchema
from workers.ai.usage import GRANULARITIES

GROUPS = ("owner", "model")
# The longest range one request may read: one hash per bucket.
MAX_RANGE = {"hour": timedelta(days=31), "day": timedelta(days=366)}
# Times a range may name (a bucket's arithmetic stays within datetime's years).
EARLIEST = datetime(1970, 1, 2, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
DEFAULT_RANGE = {"hour": timedelta(hours=24), "day": timedelta(days=30)}


def _utc(moment: datetime | None, name: str) -> datetime | None:
    """A time without an offset is taken as UTC, as every time the API answers is."""
    if moment is None:
        return None
    moment = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    if not EARLIEST <= moment <= LATEST:
        raise ValidationError(f"between {EARLIEST.year} and {LATEST.year}", name)
    return moment


def _group_names(text: str) -> bool:
    names = [name for name in text.split(",") if name]
    if set(names) - set(GROUPS):
        raise ValidationError(f"a comma-separated list of {', '.join(GROUPS)} (or empty)")
    return True


class UsageQuery(StrictSchema):
    group_by = fields.String(
        load_default="owner,model",
        validate=_group_names,
        metadata={"description": "owner, model, both (default) or empty: one total per bucket"},
    )
    granularity = fields.String(
        load_default="hour", validate=validate.OneOf(GRANULARITIES),
        metadata={"description": "hour (at most 31 days) or day (at most 366 days); UTC"},
    )  # fmt: skip
    start = fields.DateTime(
        data_key="from", load_default=None,
        metadata={"description": "ISO 8601 (UTC without an offset); default: 24 hours or "
                                 "30 days before `to`"},
    )  # fmt: skip
    end = fields.DateTime(
        data_key="to", load_default=None,
        metadata={"description": "ISO 8601 (UTC without an offset); default: now"},
    )  # fmt: skip
    owner = fields.String(
        load_default=None, validate=validate.Length(1, 200),
        metadata={"description": "admin keys: one owner's usage only (a user key sees its "
                                 "own; naming another owner gets 403)"},
    )  # fmt: skip

    @post_load
    def _bounded(self, data: dict[str, Any], **_: object) -> dict[str, Any]:
        """The range with its defaults, refused when reversed or too wide; `group_by` as
        a tuple."""
        granularity = data["granularity"]
        end = _utc(data["end"], "to") or datetime.now(UTC)
        start = _utc(data["start"], "from") or end - DEFAULT_RANGE[granularity]
        if start > end:
            raise ValidationError("must not be after `to` (default: now)", "from")
        widest = MAX_RANGE[granularity]
        if end - start > widest:
            raise ValidationError(
                f"at most {widest.days} days before `to` for {granularity} buckets", "from"
            )
        names = [name for name in data["group_by"].split(",") if name]
        return {**data, "start": start, "end": end, "group_by": tuple(dict.fromkeys(names))}


class UsageTotals(Schema):
    owner = fields.String(
        allow_none=True,
        metadata={"description": "when grouped by owner (null: tasks without an owner)"},
    )
    model = fields.String(metadata={"description": "when grouped by model: the one that answered"})
    tasks = fields.Integer(required=True)
    prompt_tokens = fields.Integer(required=True)
    completion_tokens = fields.Integer(required=True)
    total_tokens = fields.Integer(required=True)
    cost = fields.Float(required=True, metadata={"description": "USD (MODEL_PRICES)"})
    unpriced_tasks = fields.Integer(
        required=True, metadata={"description": "tasks of models without a price (cost 0)"}
    )
    ttft_ms_avg = fields.Float(
        allow_none=True, metadata={"description": "average milliseconds to the first text"}
    )


class UsageBucket(Schema):
    start = fields.String(required=True, metadata={"description": "the bucket's start, UTC"})
    totals = fields.List(fields.Nested(UsageTotals), required=True)


class UsageResponse(Schema):
    granularity = fields.String(required=True)
    group_by = fields.List(fields.String(), required=True)
    start = fields.String(required=True, data_key="from")
    end = fields.String(required=True, data_key="to")
    owner = fields.String(
        allow_none=True, metadata={"description": "whose usage (None: every owner's, admins)"}
    )
    buckets = fields.List(
        fields.Nested(UsageBucket),
        required=True,
        metadata={"description": "oldest first; only buckets with usage"},
    )
    totals = fields.List(
        fields.Nested(UsageTotals), required=True, metadata={"description": "over the range"}
    )


class BudgetRequest(StrictSchema):
    tokens_per_minute = fields.Integer(
        strict=True, load_default=None, allow_none=True, validate=validate.Range(min=0),
        metadata={"description": "tokens of AI tasks finished in 60 s; 0: unlimited; "
                                 "null: BUDGET_TOKENS_PER_MINUTE"},
    )  # fmt: skip
    cost_per_day = fields.Float(
        load_default=None, allow_none=True, validate=validate.Range(min=0),
        metadata={"description": "USD per UTC day; 0: unlimited; null: BUDGET_COST_PER_DAY"},
    )  # fmt: skip


class BudgetLimit(Schema):
    limit = fields.Raw(required=True, metadata={"description": "a number; 0: unlimited"})
    used = fields.Raw(required=True, metadata={"description": "a number"})
    resets_at = fields.String(
        allow_none=True, metadata={"description": "when the used amount falls (ISO 8601)"}
    )
    source = fields.String(
        required=True, metadata={"description": "owner (set by the admin API) or default"}
    )


class BudgetResponse(Schema):
    owner = fields.String(required=True)
    tokens_per_minute = fields.Nested(BudgetLimit, required=True)
    cost_per_day = fields.Nested(BudgetLimit, required=True)
    exceeded = fields.List(fields.String(), required=True)
