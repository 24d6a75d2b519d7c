"""Request and response schemas: the API contract and the source of its OpenAPI document.

Field names from the source document (`task_id`, `status`, `result`, `error`,
`date_done`, `runtime`, `total_tasks`, ...) are a contract: add fields, never rename.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import TypeVar

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    validate,
    validates,
    validates_schema,
)

from workers.core.queues import QUEUES
from workers.notify.task_webhooks import EVENTS as WEBHOOK_EVENTS
from workers.runtime.priority import MAX_PRIORITY, MIN_PRIORITY
from workers.taskindex import labels
from workers.taskindex.record import STATES

MAX_WAIT = 60

S = TypeVar("S", bound="Schema")


@functools.cache
def shared(schema_class: type[S]) -> S:
    """One instance per schema class: building a schema costs more than using it."""
    return schema_class()


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE


# --- requests -------------------------------------------------------------------------


class TaskWebhook(StrictSchema):
    url = fields.Url(
        required=True, schemes={"http", "https"}, require_tld=False,
        validate=validate.Length(max=2000),
        metadata={"description": "where to POST (checked like notification webhooks)"},
    )  # fmt: skip
    events = fields.List(
        fields.String(validate=validate.OneOf(WEBHOOK_EVENTS)),
        load_default=lambda: ["completed"],
        validate=validate.Length(1, len(WEBHOOK_EVENTS)),
        metadata={"description": "started, output (each chunk and progress), completed"},
    )


class SubmitOptions(StrictSchema):
    """Scheduling options every submission accepts."""

    tags = fields.List(
        fields.String(validate=validate.Regexp(labels.TAG, error="1-64 of A-Z a-z 0-9 _ . : / -")),
        load_default=None,
        validate=validate.Length(max=labels.MAX_TAGS),
        metadata={"description": "up to 10 short strings; `GET /list?tag=` finds the task"},
    )
    metadata = fields.Dict(
        keys=fields.String(),
        load_default=None,
        metadata={
            "description": "a small JSON object (16 keys, 4 KB); `GET /list?metadata=key=value` "
            "finds the task by a short scalar value"
        },
    )

    @validates("metadata")
    def _small_metadata(self, value: dict | None, **_: object) -> None:
        problem = labels.metadata_problem(value) if value is not None else None
        if problem:
            raise ValidationError(problem)

    webhook = fields.Nested(
        TaskWebhook,
        load_default=None,
        metadata={
            "description": "POST the task's events here, signed per Standard Webhooks "
            "(docs/webhooks.md)"
        },
    )

    priority = fields.Integer(
        load_default=None,
        validate=validate.Range(MIN_PRIORITY, MAX_PRIORITY),
        metadata={"description": "0-9; 9 runs first. Default 5."},
    )
    countdown = fields.Float(
        load_default=None,
        validate=validate.Range(min=0, max=30 * 86400),
        metadata={"description": "seconds to wait before running"},
    )
    eta = fields.AwareDateTime(
        load_default=None, metadata={"description": "run at (ISO 8601 with a timezone)"}
    )

    @validates_schema
    def _one_delay(self, data: dict, **_: object) -> None:
        if data.get("countdown") is not None and data.get("eta") is not None:
            raise ValidationError("give countdown or eta, not both", "eta")
        if data.get("eta") is not None and data["eta"] <= datetime.now(UTC):
            raise ValidationError("must be in the future", "eta")


class WaitQuery(StrictSchema):
    wait = fields.Float(
        load_default=None,
        validate=validate.Range(min=0, max=MAX_WAIT),
        metadata={"description": f"seconds (max {MAX_WAIT}) to wait for the task to finish"},
    )
    stream = fields.Boolean(
        load_default=False,
        metadata={
            "description": "answer the new task's event stream (text/event-stream, as "
            "`GET /tasks/{task_id}/stream`), a `submitted` event with its `task_id` first"
        },
    )

    @validates_schema
    def _one_way(self, data: dict, **_: object) -> None:
        if data.get("stream") and data.get("wait"):
            raise ValidationError("wait for the result or stream it, not both", "stream")


def acting_owner_field() -> fields.String:
    """`owner` of the submissions and queries that touch conversations or knowledge bases."""
    return fields.String(
        load_default=None,
        validate=validate.Length(1, 200),
        metadata={
            "description": "admin keys only: act on this owner's conversations and knowledge "
            "bases (default: the key's own owner); a user key naming another owner gets 403"
        },
    )


class AiGenerateRequest(SubmitOptions):
    conversation_id = fields.String(required=True, validate=validate.Length(1, 200))
    user_message = fields.String(required=True, validate=validate.Length(1, 32_000))
    temperature = fields.Float(load_default=0.7, validate=validate.Range(0, 2))
    user_id = fields.String(load_default=None, validate=validate.Length(1, 200))
    model = fields.String(
        load_default=None,
        validate=validate.Length(1, 200),
        metadata={"description": "one of OPENAI_ALLOWED_MODELS; default OPENAI_MODEL"},
    )
    max_tokens = fields.Integer(
        load_default=None,
        validate=validate.Range(1, 128_000),
        metadata={"description": "at most MAX_TOKENS_USER, or MAX_TOKENS_ADMIN for admin keys"},
    )
    knowledge_base_id = fields.String(
        load_default=None,
        validate=validate.Length(1, 200),
        metadata={"description": "ground the reply on this knowledge base (404 if absent)"},
    )
    owner = acting_owner_field()


class StreamQuery(StrictSchema):
    starting_after = fields.Integer(
        load_default=None,
        strict=False,
        validate=validate.Range(min=0, max=2**53),
        metadata={
            "description": "replay the events numbered after this one (0: from the start); "
            "the `Last-Event-ID` header does the same"
        },
    )


class TaskStreamEvent(Schema):
    """The `data` of one numbered event of a task's SSE stream (docs/sse.md): the event as
    the task's event log holds it (workers/taskindex/scripts/record.lua writes the state
    changes, feed.lua the rest), `ts` in ISO 8601; the final state's also carries `task`."""

    type = fields.String(
        metadata={
            "description": "task (a state change; its SSE event is `state`), progress, "
            "chunk, chunks_reset, waiting. Absent only on the unnumbered final `state` of a "
            "task recorded before event logs existed (then: task_id, state, task)"
        },
    )
    seq = fields.Integer(metadata={"description": "the event's number, also its SSE id"})
    task_id = fields.String(required=True)
    state = fields.String(
        validate=validate.OneOf(STATES),
        metadata={"description": "the task's state (task events: after the change)"},
    )
    prev = fields.String(
        validate=validate.OneOf(STATES),
        metadata={"description": "task events: the state before (absent on the first)"},
    )
    ts = fields.String(metadata={"format": "date-time", "description": "when, ISO 8601, UTC"})
    owner = fields.String(
        allow_none=True,
        metadata={"description": "the task's owner (absent or null: none, an operator's task)"},
    )
    name = fields.String(metadata={"description": "the task's name"})
    queue = fields.String(metadata={"description": "the task's queue"})
    worker = fields.String(
        metadata={"description": "task events from a worker (STARTED, a result): its name"}
    )
    priority = fields.Integer(metadata={"description": "a submission's PENDING event"})
    tags = fields.List(
        fields.String(), metadata={"description": "a submission's PENDING event, if tagged"}
    )
    metadata = fields.Dict(
        keys=fields.String(),
        metadata={"description": "a submission's PENDING event, if it has metadata"},
    )
    result = fields.Raw(
        allow_none=True,
        metadata={
            "description": "SUCCESS: the result; null when larger than 64 KiB "
            "(`result_truncated`; `task` has it whole)"
        },
    )
    result_truncated = fields.Boolean(metadata={"description": "SUCCESS: see `result`"})
    error = fields.String(
        allow_none=True,
        metadata={"description": "FAILURE, RETRY, REVOKED: the error's message, as REST's"},
    )
    error_type = fields.String(
        allow_none=True,
        metadata={"description": "FAILURE, RETRY, REVOKED: its type (a cancel: Cancelled)"},
    )
    percent = fields.Float(metadata={"description": "progress events: 0 to 100"})
    message = fields.String(metadata={"description": "progress events"})
    index = fields.Integer(metadata={"description": "chunk events: the chunk's position"})
    text = fields.String(metadata={"description": "chunk events: the output piece"})
    reason = fields.String(metadata={"description": "waiting events: why the task waits"})
    eta = fields.String(
        metadata={"format": "date-time", "description": "waiting events: until when"}
    )
    task = fields.Nested(
        "TaskStatusResponse",
        metadata={"description": "the final state event: the status body, result included"},
    )


class TaskStreamResume(Schema):
    """The `data` of a stream's `resume` event (no id): the gateway ended the stream;
    reconnect with `Last-Event-ID: <starting_after>`."""

    starting_after = fields.Integer(
        required=True, metadata={"description": "the last event sent on this stream"}
    )
    reason = fields.String(
        required=True, metadata={"description": "slow reader, max age, server shutdown"}
    )


class TaskWebhookPayload(Schema):
    """What a task's webhook is POSTed (docs/webhooks.md), signed per Standard Webhooks."""

    type = fields.String(
        required=True, metadata={"description": "task.started, task.output, task.completed"}
    )
    timestamp = fields.String(required=True, metadata={"description": "ISO 8601, UTC"})
    data = fields.Raw(
        required=True,
        metadata={
            "description": "task.started, task.completed: the status body "
            "(TaskStatusResponse); task.output: the output event (TaskStreamEvent)"
        },
    )


class TaskListQuery(StrictSchema):
    limit = fields.Integer(load_default=50, validate=validate.Range(1, 500))
    cursor = fields.Integer(load_default=None, validate=validate.Range(min=0))
    status = fields.String(load_default=None, validate=validate.OneOf(STATES))
    queue = fields.String(load_default=None, validate=validate.Length(1, 200))
    system = fields.Boolean(
        load_default=False,
        metadata={
            "description": "include the platform's housekeeping tasks (health "
            "check, cleanup, webhook deliveries); a `name` filter always does"
        },
    )
    name = fields.String(
        load_default=None,
        validate=validate.Length(1, 200),
        metadata={"description": "a task name, or a part of one (case-insensitive)"},
    )
    owner = fields.String(load_default=None, validate=validate.Length(1, 200))
    tag = fields.String(
        load_default=None,
        validate=validate.Regexp(labels.TAG, error="1-64 of A-Z a-z 0-9 _ . : / -"),
        metadata={"description": "tasks submitted with this tag"},
    )
    metadata = fields.String(
        load_default=None,
        validate=validate.Regexp(
            r"[A-Za-z0-9_.-]{1,64}=.{0,128}\Z", error="key=value (a metadata key, a short value)"
        ),
        metadata={"description": "`key=value`: tasks whose metadata has it (compared as text)"},
    )

    def labels(self, query: dict) -> tuple[str, ...]:
        """The labels the loaded query asks for (`workers.taskindex.labels`)."""
        wanted = []
        if query.get("tag"):
            wanted.append(labels.tag_label(query["tag"]))
        if query.get("metadata"):
            key, _, value = query["metadata"].partition("=")
            wanted.append(labels.metadata_label(key, value))
        return tuple(wanted)


class BulkRequest(TaskListQuery):
    """A bulk action's filter: `GET /list`'s, as a JSON body."""

    class Meta:
        unknown = RAISE
        exclude = ("limit", "cursor")

    dry_run = fields.Boolean(
        load_default=False, metadata={"description": "only count the tasks it would act on"}
    )


class BulkDryRunResponse(Schema):
    action = fields.String(required=True)
    dry_run = fields.Boolean(required=True)
    matched = fields.Integer(required=True, metadata={"description": "up to 100,000"})
    truncated = fields.Boolean(
        required=True, metadata={"description": "more match: the action takes the newest"}
    )


class CancelQuery(StrictSchema):
    terminate = fields.Boolean(
        load_default=False, metadata={"description": "terminate a running task (admin)"}
    )


class WorkerTarget(StrictSchema):
    worker_name = fields.String(load_default=None, validate=validate.Length(1, 300))
    all = fields.Boolean(load_default=False)

    @validates_schema
    def _target(self, data: dict, **_: object) -> None:
        if not data.get("worker_name") and not data.get("all"):
            raise ValidationError("name a worker, or pass all=true", "worker_name")
        if data.get("worker_name") and data.get("all"):
            raise ValidationError("give worker_name or all=true, not both", "all")


class PoolRestartQuery(StrictSchema):
    worker_name = fields.String(required=True, validate=validate.Length(1, 300))


# --- responses ------------------------------------------------------------------------


class ErrorResponse(Schema):
    error = fields.String(required=True)
    details = fields.Dict(keys=fields.String(), values=fields.Raw())


class SubmitResponse(Schema):
    task_id = fields.String(required=True)
    status = fields.String(required=True)
    message = fields.String(required=True)


class Progress(Schema):
    percent = fields.Float()
    message = fields.String()


class TaskSummary(Schema):
    task_id = fields.String(required=True)
    status = fields.String(required=True)
    name = fields.String(allow_none=True)
    queue = fields.String(allow_none=True)
    priority = fields.Integer(allow_none=True)
    owner = fields.String(allow_none=True)
    submitted_at = fields.String(allow_none=True, metadata={"description": "ISO 8601, UTC"})
    started_at = fields.String(allow_none=True, metadata={"description": "ISO 8601, UTC"})
    finished_at = fields.String(allow_none=True, metadata={"description": "ISO 8601, UTC"})
    runtime = fields.Float(allow_none=True, metadata={"description": "seconds"})
    retries = fields.Integer(allow_none=True)
    worker = fields.String(allow_none=True)
    error = fields.String(allow_none=True)
    result_preview = fields.String(allow_none=True)
    waiting_reason = fields.String(
        allow_none=True,
        metadata={"description": "why a task due to run waits (its rate limit) until `eta`"},
    )
    retried_from = fields.String(allow_none=True, metadata={"description": "the task retried"})
    schedule_id = fields.String(
        allow_none=True, metadata={"description": "the schedule that sent it (/api/v1/schedules)"}
    )
    retried_as = fields.String(
        allow_none=True, metadata={"description": "the task a retry created (retried already)"}
    )
    tags = fields.List(fields.String(), allow_none=True)
    metadata = fields.Dict(allow_none=True)
    batch_id = fields.String(
        allow_none=True, metadata={"description": "the batch it is an item of"}
    )


class QueueState(Schema):
    queue = fields.String(required=True)
    waiting = fields.Integer(required=True, metadata={"description": "messages in the queue"})
    consumers = fields.Integer(
        required=True, metadata={"description": "live workers consuming it (0: it waits)"}
    )
    ahead = fields.Integer(
        allow_none=True,
        metadata={
            "description": "messages the workers take before this task's: those of higher "
            "priorities, then the older ones of its own; null when its message is not in the "
            "queue (`held`) or further back than the 1000 oldest of its priority"
        },
    )
    held = fields.Boolean(
        metadata={
            "description": "a worker has taken its message: prefetched (it starts when a "
            "process of that worker is free) or, with an `eta`, holding it until then"
        }
    )
    rate_limit = fields.String(
        allow_none=True,
        metadata={
            "description": "its name's platform-wide rate limit (the built-in tasks': "
            "AI_RATE_LIMIT, VECTORIZE_RATE_LIMIT), as `limit/<window>s`",
            "example": "10/60s",
        },
    )
    rate_limit_used = fields.Integer(
        allow_none=True,
        metadata={"description": "slots of that limit taken within its window now (all owners)"},
    )


class TaskStatusResponse(TaskSummary):
    class Meta:
        exclude = ("result_preview",)  # `result` is here in full

    queue_state = fields.Nested(
        QueueState,
        allow_none=True,
        metadata={
            "description": "a PENDING task: its queue's depth and consumers; with `explain`, "
            "also its place in the queue and its rate limit's use"
        },
    )

    result = fields.Raw(allow_none=True)
    date_done = fields.String(allow_none=True)
    error_type = fields.String(allow_none=True)
    traceback = fields.String(allow_none=True, metadata={"description": "admins only"})
    progress = fields.Nested(Progress, allow_none=True)
    args = fields.Raw(allow_none=True)
    kwargs = fields.Raw(allow_none=True)
    eta = fields.String(allow_none=True)
    trace_id = fields.String(
        allow_none=True,
        metadata={"description": "the OpenTelemetry trace of its submission (tracing on)"},
    )
    deferrals = fields.Integer(
        allow_none=True, metadata={"description": "deliveries that waited for the rate limit"}
    )
    # An AI task's usage, once it finished (`workers.ai.usage`).
    model = fields.String(allow_none=True, metadata={"description": "the model that answered"})
    prompt_tokens = fields.Integer(allow_none=True)
    completion_tokens = fields.Integer(allow_none=True)
    cost = fields.Float(allow_none=True, metadata={"description": "USD (MODEL_PRICES)"})
    cost_priced = fields.Boolean(
        allow_none=True, metadata={"description": "false: the model has no price; cost is 0"}
    )
    ttft_ms = fields.Float(
        allow_none=True, metadata={"description": "milliseconds to the first text"}
    )


class TaskListResponse(Schema):
    tasks = fields.List(fields.Nested(TaskSummary), required=True)
    count = fields.Integer(required=True)
    next_cursor = fields.String(allow_none=True, required=True)


class MinuteCount(Schema):
    minute = fields.String(metadata={"description": "the minute's start, ISO 8601, UTC"})
    finished = fields.Integer()


class CatalogTask(Schema):
    name = fields.String(required=True)
    queue = fields.String(required=True, metadata={"description": "the queue it is routed to"})


class CatalogResponse(Schema):
    queues = fields.List(fields.String(), required=True)
    tasks = fields.List(
        fields.Nested(CatalogTask),
        required=True,
        metadata={"description": "the built-in tasks the API submits"},
    )
    states = fields.List(fields.String(), required=True)
    terminal_states = fields.List(fields.String(), required=True)
    system_tasks = fields.List(
        fields.String(),
        required=True,
        metadata={
            "description": "the platform's housekeeping tasks (hidden from lists "
            "unless `system=true`)"
        },
    )


class StatusQuery(StrictSchema):
    explain = fields.Boolean(
        load_default=False,
        metadata={
            "description": "a PENDING task's `queue_state` also says how many tasks are ahead "
            "of it, whether a worker holds it and its rate limit's use (a scan of up to 1,000 "
            "queued messages: for a person looking, not for polling)"
        },
    )


class StatsQuery(StrictSchema):
    system = fields.Boolean(
        load_default=False,
        metadata={"description": "count the platform's housekeeping tasks too (admins)"},
    )


class StatsResponse(Schema):
    total_tasks = fields.Integer(required=True)
    pending = fields.Integer(required=True)
    started = fields.Integer(required=True)
    success = fields.Integer(required=True)
    failure = fields.Integer(required=True)
    retry = fields.Integer(required=True)
    revoked = fields.Integer(required=True)
    workers = fields.Integer(required=True)
    queues = fields.Dict(
        keys=fields.String(validate=validate.OneOf(QUEUES)),
        values=fields.Integer(),
        metadata={"description": "messages waiting per queue"},
    )
    unconsumed_queues = fields.List(
        fields.String(),
        metadata={"description": "queues with waiting tasks and no live worker consuming them"},
    )
    tasks_per_minute = fields.List(fields.Nested(MinuteCount))


class CancelResponse(Schema):
    task_id = fields.String(required=True)
    status = fields.String(required=True)
    message = fields.String(required=True)


class RetryResponse(Schema):
    task_id = fields.String(required=True, metadata={"description": "the new task"})
    retried_from = fields.String(required=True)
    status = fields.String(required=True)
    message = fields.String(required=True)


class WorkerInfo(Schema):
    hostname = fields.String(required=True)
    status = fields.String(required=True)
    queues = fields.List(fields.String())
    concurrency = fields.Integer(allow_none=True)
    active = fields.Integer(allow_none=True)
    reserved = fields.Integer(allow_none=True)
    processed = fields.Integer(allow_none=True)
    last_heartbeat = fields.String(allow_none=True, metadata={"description": "ISO 8601, UTC"})
    pid = fields.Integer(allow_none=True)
    responded = fields.Boolean(metadata={"description": "answered the inspect broadcast"})


class WorkersResponse(Schema):
    workers = fields.List(fields.Nested(WorkerInfo), required=True)
    count = fields.Integer(required=True)


class WorkerControlResponse(Schema):
    action = fields.String(required=True)
    replies = fields.Dict(keys=fields.String(), values=fields.Raw(), required=True)
