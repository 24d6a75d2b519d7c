"""Request schemas of the knowledge base and notification submissions, and the schemas of
the knowledge reads (listings, search).

The submission endpoints load these like any other `XxxRequest`; scheduling options
(priority, countdown, eta) come from `SubmitOptions`. Knowledge bases belong to the key's
owner; `owner` lets an admin key act on another owner's (`service.ownership`).
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from service.schemas import SubmitOptions, acting_owner_field
from workers.core.settings import Settings, get_settings
from workers.notify.validation import CHANNELS, NotificationInvalid, validate_notification

_ID = validate.Length(1, 200)


class VectorizeRequest(SubmitOptions):
    document_id = fields.String(required=True, validate=_ID)
    kb_id = fields.String(required=True, validate=_ID)
    text = fields.String(required=True, validate=validate.Length(1, 2_000_000))
    title = fields.String(load_default="", validate=validate.Length(0, 500))
    # The document's metadata (kept with its chunks), not the task's: a submission's
    # `metadata` limits and indexing do not apply to it.
    metadata = fields.Dict(keys=fields.String(), load_default=dict)
    owner = acting_owner_field()

    def _small_metadata(self, value: dict | None, **_: object) -> None:
        """(SubmitOptions' check of a task's metadata, not a document's.)"""


class UpdateKnowledgeBaseRequest(SubmitOptions):
    kb_id = fields.String(required=True, validate=_ID)
    owner = acting_owner_field()


class DeleteVectorsRequest(SubmitOptions):
    kb_id = fields.String(required=True, validate=_ID)
    document_id = fields.String(
        load_default=None, validate=_ID,
        metadata={"description": "omit to delete the whole knowledge base"},
    )  # fmt: skip
    owner = acting_owner_field()


class SendNotificationRequest(SubmitOptions):
    """A notification; unknown channels and bad addresses are refused here (400)."""

    channel = fields.String(required=True, validate=validate.OneOf(CHANNELS))
    recipient = fields.String(
        required=True, validate=validate.Length(1, 2000),
        metadata={"description": "webhook URL, email address, or user id for in_app"},
    )  # fmt: skip
    message = fields.String(required=True, validate=validate.Length(1, 100_000))
    subject = fields.String(load_default=None, validate=validate.Length(1, 500))
    data = fields.Dict(keys=fields.String(), load_default=None)

    def __init__(self, *args: Any, settings: Settings | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = settings

    @validates_schema
    def _deliverable(self, data: dict, **_: object) -> None:
        if data.get("channel") not in CHANNELS or not data.get("recipient"):
            return  # the field validators already said why
        try:
            validate_notification(
                data["channel"], data["recipient"], self.settings or get_settings()
            )
        except NotificationInvalid as exc:
            raise ValidationError(exc.message, exc.field) from None


class OwnerQuery(Schema):
    owner = acting_owner_field()


class KnowledgeSearchQuery(Schema):
    # 500 characters stay under the HTTP parser's 8 KiB request line, percent-encoded.
    q = fields.String(required=True, validate=validate.Length(1, 500))
    k = fields.Integer(load_default=5, validate=validate.Range(1, 50))
    owner = acting_owner_field()


class KnowledgeMatch(Schema):
    document_id = fields.String()
    chunk_index = fields.Integer()
    title = fields.String()
    text = fields.String()
    score = fields.Float()
    metadata = fields.Dict()


class KnowledgeSearchResponse(Schema):
    kb_id = fields.String()
    query = fields.String()
    k = fields.Integer()
    results = fields.List(fields.Nested(KnowledgeMatch))


class KnowledgeBaseSummary(Schema):
    kb_id = fields.String(required=True)
    documents = fields.Integer(required=True, metadata={"description": "its number of documents"})


class KnowledgeBasesResponse(Schema):
    knowledge_bases = fields.List(
        fields.Nested(KnowledgeBaseSummary), required=True,
        metadata={"description": "the acting owner's knowledge bases (none: empty)"},
    )  # fmt: skip


class KnowledgeDocument(Schema):
    document_id = fields.String(required=True)
    title = fields.String(required=True)
    chunks = fields.Integer(required=True, metadata={"description": "its number of chunks"})
    updated_at = fields.String(
        required=True, allow_none=True,
        metadata={"description": "when it was last vectorized (ISO 8601, UTC)"},
    )  # fmt: skip
    size = fields.Integer(
        required=True, metadata={"description": "its text's length, in characters"}
    )


class KnowledgeDocumentsResponse(Schema):
    kb_id = fields.String(required=True)
    documents = fields.List(fields.Nested(KnowledgeDocument), required=True)
