"""A task's record in the index, as one typed model: the one list of its fields.

The record is the hash `claw:task:<id>` (`workers.core.keys.task_key`); each attribute of
`TaskRecord` is one field of it, stored as text. Whatever names record fields follows this
class: the writers (`encode_fields` refuses a field it does not have), the Lua scripts
(workers/taskindex/scripts/*.lua), the gateway's reader (service/task_store.py) and the
API's schemas (service/schemas.py). tests/workers/taskindex/test_record_model.py fails
when one of them names a field this class lacks.

The states a record goes through, and how far along each is, are defined here too and
handed to the scripts (see `workers.taskindex.lua_scripts`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from workers.core.headers import (
    BATCH_HEADER,
    METADATA_HEADER,
    OWNER_HEADER,
    RETRIED_FROM_HEADER,
    TAGS_HEADER,
    WEBHOOK_HEADER,
)
from workers.core.telemetry import current_trace_id
from workers.taskindex.labels import MAX_TAGS, SEPARATOR, TAG, labels, metadata_problem

STATES = ("PENDING", "STARTED", "RETRY", "SUCCESS", "FAILURE", "REVOKED")
TERMINAL_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
# How far along a state is. Within one attempt an update never moves a task back to a
# lower rank (a late STARTED after RETRY); a terminal state is final whatever comes after.
STATE_RANK = {"PENDING": 0, "STARTED": 2, "RETRY": 3, "SUCCESS": 10, "FAILURE": 10, "REVOKED": 10}

ARGS_CAP = 256 * 1024
PREVIEW_CAP = 500

# How a field's value is stored: `text` as is, `number` a float (epoch seconds),
# `integer`, `flag` "1"/"0", `json` JSON text.
Kind = Literal["text", "number", "integer", "flag", "json"]


def _stored(kind: Kind, *, summary: bool = False) -> dict[str, Any]:
    """A field's metadata: stored as `kind`; `summary`: part of a task list's rows."""
    return {"kind": kind, "summary": summary}


@dataclass(frozen=True)
class TaskRecord:
    """One task's record. Every field but `task_id` may be missing from the hash."""

    task_id: str = field(metadata=_stored("text", summary=True))
    # Written by the index itself (workers/taskindex/scripts/record.lua); `seq` is the
    # task's score in every index.
    seq: int | None = field(default=None, metadata=_stored("integer", summary=True))
    state: str | None = field(default=None, metadata=_stored("text", summary=True))
    # The attempt the state belongs to.
    attempt: int | None = field(default=None, metadata=_stored("integer"))
    created_at: float | None = field(default=None, metadata=_stored("number"))
    updated_at: float | None = field(default=None, metadata=_stored("number"))
    finished_at: float | None = field(default=None, metadata=_stored("number", summary=True))
    # Written by the publisher (`submission_fields`).
    name: str | None = field(default=None, metadata=_stored("text", summary=True))
    queue: str | None = field(default=None, metadata=_stored("text", summary=True))
    priority: int | None = field(default=None, metadata=_stored("integer", summary=True))
    owner: str | None = field(default=None, metadata=_stored("text", summary=True))
    submitted_at: float | None = field(default=None, metadata=_stored("number", summary=True))
    # ISO 8601, as in the message's header.
    eta: str | None = field(default=None, metadata=_stored("text"))
    # [hard, soft] seconds.
    timelimit: list[float | None] | None = field(default=None, metadata=_stored("json"))
    args: Any = field(default=None, metadata=_stored("json"))
    kwargs: Any = field(default=None, metadata=_stored("json"))
    # Set when args or kwargs were too large to keep (then not resent).
    args_truncated: bool | None = field(default=None, metadata=_stored("flag"))
    retried_from: str | None = field(default=None, metadata=_stored("text", summary=True))
    # The trace its submission belongs to (OpenTelemetry, `workers.core.telemetry`): 32 hex
    # digits, written only while tracing is on.
    trace_id: str | None = field(default=None, metadata=_stored("text"))
    # Written by the workers (`workers.runtime.backend`, `workers.runtime.progress`).
    retries: int | None = field(default=None, metadata=_stored("integer", summary=True))
    worker: str | None = field(default=None, metadata=_stored("text", summary=True))
    started_at: float | None = field(default=None, metadata=_stored("number", summary=True))
    result_preview: str | None = field(default=None, metadata=_stored("text", summary=True))
    error_type: str | None = field(default=None, metadata=_stored("text", summary=True))
    error_message: str | None = field(default=None, metadata=_stored("text", summary=True))
    traceback: str | None = field(default=None, metadata=_stored("json"))
    progress: dict[str, Any] | None = field(default=None, metadata=_stored("json"))
    # A delivery's claim before it runs (claim.lua) and what happened to deliveries.
    claimed: bool | None = field(default=None, metadata=_stored("flag"))
    # The claim token of the delivery holding it.
    claimed_by: str | None = field(default=None, metadata=_stored("text"))
    claimed_at: float | None = field(default=None, metadata=_stored("number"))
    deliveries: int | None = field(default=None, metadata=_stored("integer"))
    worker_losses: int | None = field(default=None, metadata=_stored("integer"))
    cancel_requested: bool | None = field(default=None, metadata=_stored("flag"))
    # Republished by `workers.runtime.recovery`.
    recovered_at: float | None = field(default=None, metadata=_stored("number"))
    # The task a retry through the API created.
    retried_as: str | None = field(default=None, metadata=_stored("text", summary=True))
    # Why a task that should run now waits (its rate limit; `workers/runtime/rate_limit.py`)
    # until `eta`, and how many deliveries waited so; cleared when it starts.
    waiting_reason: str | None = field(default=None, metadata=_stored("text", summary=True))
    deferrals: int | None = field(default=None, metadata=_stored("integer"))
    # Under replica acknowledgement (REDIS_REPLICA_ACKS): no delivery runs before this
    # time unless the publisher confirmed the task (replicas hold it) and removed it; a
    # task it refused instead is revoked by then.
    confirm_by: float | None = field(default=None, metadata=_stored("number"))
    # A completion webhook the submitter asked for ({"url", "events"}), and its events as
    # ",started,output,completed," for the scripts (record.lua, feed.lua) to match.
    webhook: dict[str, Any] | None = field(default=None, metadata=_stored("json"))
    webhook_events: str | None = field(default=None, metadata=_stored("text"))
    # The owner's schedule that sent it (Beat; `workers.runtime.schedules`).
    schedule_id: str | None = field(default=None, metadata=_stored("text", summary=True))
    # The submitter's tags and metadata (`workers.taskindex.labels`), and the labels they
    # are indexed under, as record.lua reads them (written once, at submission).
    tags: list[str] | None = field(default=None, metadata=_stored("json", summary=True))
    metadata: dict[str, Any] | None = field(default=None, metadata=_stored("json", summary=True))
    labels: str | None = field(default=None, metadata=_stored("text", summary=True))
    # The batch the task is an item of (`POST /api/v1/batches`, workers/tasks/batches.py).
    batch_id: str | None = field(default=None, metadata=_stored("text", summary=True))
    # What an AI task used (`workers.ai.usage`), written as it finishes: the model that
    # answered, its tokens, USD (`cost_priced` false: the model has no price, counted as 0)
    # and the milliseconds to its first text.
    model: str | None = field(default=None, metadata=_stored("text"))
    prompt_tokens: int | None = field(default=None, metadata=_stored("integer"))
    completion_tokens: int | None = field(default=None, metadata=_stored("integer"))
    cost: float | None = field(default=None, metadata=_stored("number"))
    cost_priced: bool | None = field(default=None, metadata=_stored("flag"))
    ttft_ms: float | None = field(default=None, metadata=_stored("number"))

    @classmethod
    def from_hash(cls, raw: Mapping[str, str | None]) -> TaskRecord:
        """The record from the hash's strings (all of them, or those of an HMGET)."""
        return cls(**decode_hash(raw))

    def send_options(self) -> SendOptions:
        """What sends this task again as it was first sent: the keyword arguments of
        Celery's `send_task` (and of the gateway's `TaskPublisher.publish`) after its name."""
        if self.args_truncated:
            raise ValueError(f"task {self.task_id}: its arguments were too large to keep")
        hard, soft = [*(self.timelimit or []), None, None][:2]
        headers = [
            (OWNER_HEADER, self.owner), (TAGS_HEADER, self.tags), (METADATA_HEADER, self.metadata),
            (WEBHOOK_HEADER, self.webhook),
        ]  # fmt: skip
        return {
            "args": list(self.args or []),
            "kwargs": dict(self.kwargs or {}),
            "queue": self.queue,
            "priority": self.priority,
            "headers": {name: value for name, value in headers if value},
            "time_limit": hard,
            "soft_time_limit": soft,
        }


class SendOptions(TypedDict):
    args: list[Any]
    kwargs: dict[str, Any]
    queue: str | None
    priority: int | None
    headers: dict[str, Any]
    time_limit: float | None
    soft_time_limit: float | None


KINDS: dict[str, Kind] = {f.name: f.metadata["kind"] for f in dataclasses.fields(TaskRecord)}
FIELDS = tuple(KINDS)
# The fields of a row of a task list (PAGE reads only these).
SUMMARY_FIELDS = tuple(f.name for f in dataclasses.fields(TaskRecord) if f.metadata["summary"])


def decode_hash(raw: Mapping[str, str | None]) -> dict[str, Any]:
    """Typed values of the record fields present in `raw` (other keys are left out)."""
    return decode_pairs(raw.items())


def decode_pairs(pairs: Iterable[tuple[str, str | None]]) -> dict[str, Any]:
    """`decode_hash` of (field, value) pairs, such as a script's flat HGETALL reply zipped
    (without building the dict first: every status request reads one)."""
    decoded: dict[str, Any] = {}
    for name, value in pairs:
        kind = KINDS.get(name)
        if kind is None or value is None:
            continue
        # Text and times without a call: most of a record's fields, on every read.
        if kind == "text":
            decoded[name] = value
        elif kind == "number" and value:
            decoded[name] = float(value)
        else:
            decoded[name] = _decode(kind, value)
    return decoded


def _decode(kind: Kind, text: str) -> Any:
    if kind == "text":
        return text
    if text == "":
        return None
    if kind == "number":
        return float(text)
    if kind == "integer":
        return int(float(text))
    if kind == "flag":
        return text == "1"
    try:
        return json.loads(text)
    except ValueError:
        return text  # a value written before it was JSON; shown as it is


def encode_fields(fields: Mapping[str, Any]) -> list[str]:
    """Field/value pairs as stored, flat; None values are left out. A str is taken as the
    stored text already; other values are encoded by their field's kind. Raises ValueError
    for a name that is not a field of `TaskRecord`."""
    unknown = set(fields) - KINDS.keys()
    if unknown:
        raise ValueError(f"not fields of TaskRecord: {', '.join(sorted(unknown))}")
    flat: list[str] = []
    for name, value in fields.items():
        if value is None:
            continue
        flat += [name, value if isinstance(value, str) else _encode(KINDS[name], value)]
    return flat


def _encode(kind: Kind, value: Any) -> str:
    if kind == "number":
        return repr(float(value))
    if kind == "integer":
        return str(int(value))
    if kind == "flag":
        return "1" if value else "0"
    if kind == "json":
        return json.dumps(value)
    return str(value)


def capped_json(value: Any, cap: int = ARGS_CAP) -> tuple[str, bool]:
    """JSON text of `value`, or a truncated form and True when it is larger than `cap`."""
    try:
        text = json.dumps(value, default=repr, ensure_ascii=False)
    except (TypeError, ValueError):
        text = json.dumps(repr(value))
    if len(text) <= cap:
        return text, False
    return json.dumps(text[:cap] + "..."), True


def preview(value: Any) -> str:
    text, _ = capped_json(value, PREVIEW_CAP)
    return text


def submission_fields(
    name: str,
    args: Any,
    kwargs: Any,
    *,
    queue: str | None,
    priority: int | None,
    owner: str | None,
    eta: str | None = None,
    timelimit: Any = None,
    retried_from: str | None = None,
    webhook: dict[str, Any] | None = None,
    tags: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
    batch_id: str | None = None,
) -> dict[str, Any]:
    """A new task's record fields, as its publisher knows them."""
    args_json, args_cut = capped_json(args)
    kwargs_json, kwargs_cut = capped_json(kwargs)
    return {
        "name": name,
        "queue": queue,
        "priority": priority,
        "owner": owner,
        "retried_from": retried_from,
        "trace_id": current_trace_id(),
        "eta": eta,
        "timelimit": timelimit,
        "submitted_at": time.time(),
        "args": args_json,
        "kwargs": kwargs_json,
        "args_truncated": True if args_cut or kwargs_cut else None,
        "webhook": webhook,
        "webhook_events": f",{','.join(webhook['events'])}," if webhook else None,
        "tags": tags or None,
        "metadata": metadata or None,
        "labels": SEPARATOR.join(labels(tags, metadata)) or None,
        "batch_id": batch_id,
    }


def publish_fields(
    name: str, body: Any, routing_key: str | None, headers: Mapping[str, Any], properties: dict
) -> dict[str, Any]:
    """The record fields from a Celery message about to be published."""
    args, kwargs = (
        (body[0], body[1]) if isinstance(body, list | tuple) and len(body) >= 2 else ([], {})
    )
    return submission_fields(
        name, args, kwargs, queue=routing_key, priority=properties.get("priority"),
        owner=headers.get(OWNER_HEADER), eta=headers.get("eta"),
        timelimit=headers.get("timelimit"), retried_from=headers.get(RETRIED_FROM_HEADER),
        tags=_valid_tags(headers.get(TAGS_HEADER)),
        metadata=_valid_metadata(headers.get(METADATA_HEADER)),
        batch_id=headers.get(BATCH_HEADER) if isinstance(headers.get(BATCH_HEADER), str) else None,
        webhook=_valid_webhook(headers.get(WEBHOOK_HEADER)),
    )  # fmt: skip


def _valid_webhook(value: Any) -> dict[str, Any] | None:
    """A message's webhook header, when it has a submission's shape (else left out)."""
    if not isinstance(value, dict) or not isinstance(value.get("url"), str):
        return None
    events = value.get("events")
    if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
        return None
    return {"url": value["url"], "events": events}


def _valid_tags(value: Any) -> list[str] | None:
    """A message's tags header, when it is what a submission may carry (else left out)."""
    if not isinstance(value, list) or len(value) > MAX_TAGS:
        return None
    return value if all(isinstance(t, str) and TAG.fullmatch(t) for t in value) else None


def _valid_metadata(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, dict) or metadata_problem(value):
        return None
    return value
