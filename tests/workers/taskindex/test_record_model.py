"""The task record is one typed model (`TaskRecord`): every list of its fields elsewhere
(the Lua scripts, the API's schemas, the writers, recovery) follows it, and a record
sends its task again the way it was first sent."""

from __future__ import annotations

import re
import types
import typing
import uuid
from importlib import resources
from typing import Any

import pytest
from marshmallow import fields as ma

from service.schemas import TaskStatusResponse, TaskSummary
from workers.core.keys import BATCH_FIELDS, task_key
from workers.runtime.backend import index_fields
from workers.runtime.recovery import FIELDS as RECOVERY_FIELDS
from workers.taskindex.lua_scripts import PARTS
from workers.taskindex.record import (
    FIELDS,
    STATES,
    SUMMARY_FIELDS,
    TaskRecord,
    decode_hash,
    encode_fields,
    submission_fields,
)
from workers.taskindex.status import TIME_FIELDS

# Fields of the API's task bodies that are not stored but derived from the record and
# Celery's result meta (service/views/tasks.py: summarize, status_body).
# Fields of the API computed at read time, not stored: `queue_state` is read from the
# worker registry and the queue for a PENDING task.
DERIVED = {"status", "runtime", "error", "result", "date_done", "queue_state"}
# cancel.lua's replies besides a state.
CANCEL_REPLIES = {"MISSING", "RUNNING", "OK"}
HASH_COMMAND = re.compile(r"redis\.call\('H[A-Z]+',([^)]*)\)")


def lua_texts() -> dict[str, str]:
    folder = resources.files("workers.taskindex").joinpath("scripts")
    return {name: folder.joinpath(f"{name}.lua").read_text("utf-8") for name in PARTS}


def test_every_field_a_script_reads_or_writes_in_a_hash_is_a_record_field() -> None:
    named: dict[str, set[str]] = {}
    for script, text in lua_texts().items():
        for arguments in HASH_COMMAND.findall(text):
            for name in re.findall(r"'([a-z_]+)'", arguments):
                named.setdefault(name, set()).add(script)
    # The scan sees the fields the scripts are known to touch...
    assert {"state", "claimed_by", "retried_as", "cancel_requested", "progress"} <= set(named)
    # ...and every one of them is the model's, but for a batch's hash (batch_done.lua reads
    # it, record.lua counts an item's end in it) whose fields are BATCH_FIELDS.
    batch_only = {"batch_done", "seal_batch"}
    assert {name: s for name, s in named.items() if name not in FIELDS and not (
        name in BATCH_FIELDS and (s <= batch_only or name == "ended"))} == {}  # fmt: skip


def test_every_state_a_script_names_is_one_of_the_models_states() -> None:
    # Compared with, defaulted to or returned (a Redis command is called, never compared).
    literal = re.compile(r"(?:==|~=|\bor|\breturn)\s+'([A-Z_]{2,})'")
    named = {word for text in lua_texts().values() for word in literal.findall(text)}
    assert {"STARTED", "SUCCESS"} <= named
    assert named - set(STATES) - CANCEL_REPLIES == set()


def marshmallow_class(annotation: Any) -> tuple[type, ...]:
    """The marshmallow field classes that may carry values of a record field's type."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if isinstance(annotation, types.UnionType) and len(args) == 1:
        annotation = args[0]
    origin = typing.get_origin(annotation) or annotation
    return {
        str: (ma.String,), float: (ma.Float,), int: (ma.Integer,), bool: (ma.Boolean,),
        list: (ma.List, ma.Raw), dict: (ma.Nested, ma.Dict, ma.Raw),
    }.get(origin, (ma.Raw,))  # fmt: skip


@pytest.mark.parametrize("schema", [TaskSummary, TaskStatusResponse], ids=lambda s: s.__name__)
def test_the_api_schemas_name_record_fields_with_their_types(schema: Any) -> None:
    hints = typing.get_type_hints(TaskRecord)
    declared = schema._declared_fields
    assert set(declared) - set(FIELDS) - DERIVED == set()
    wrong = {
        name: type(f).__name__
        for name, f in declared.items()
        if name in hints
        and name not in TIME_FIELDS
        and not isinstance(f, marshmallow_class(hints[name]))
    }
    assert wrong == {}
    # The record's times (epoch seconds) are answered as ISO 8601 strings.
    assert all(isinstance(declared[n], ma.String) for n in TIME_FIELDS if n in declared)


def test_a_task_lists_rows_name_only_summary_fields() -> None:
    assert set(TaskSummary._declared_fields) - set(SUMMARY_FIELDS) - DERIVED == set()
    assert set(SUMMARY_FIELDS) <= set(FIELDS)


def test_the_writers_and_recovery_name_only_record_fields() -> None:
    from celery.app.task import Context

    request = Context(id="t", task="n", retries=1, hostname="w", delivery_info={"routing_key": "q"})
    written = set()
    for state, result in (("STARTED", None), ("SUCCESS", 1), ("FAILURE", ValueError("x"))):
        written |= set(index_fields(result, state, "Traceback...", request))
    written |= set(submission_fields("n", [], {}, queue="q", priority=1, owner="o"))
    assert written - set(FIELDS) == set()
    assert set(RECOVERY_FIELDS) - set(FIELDS) == set()
    with pytest.raises(ValueError, match="not fields of TaskRecord: shoe_size"):
        encode_fields({"shoe_size": 44})


def test_each_kind_of_field_reads_back_as_written() -> None:
    written = {
        "task_id": "t", "priority": 0, "submitted_at": 1.5, "args_truncated": True,
        "claimed": False, "timelimit": [20, 10], "args": [1, "two"], "kwargs": {"x": None},
        "progress": {"percent": 40.0},
    }  # fmt: skip
    flat = encode_fields(written)
    stored = dict(zip(flat[::2], flat[1::2], strict=True))
    assert stored["priority"] == "0" and stored["args_truncated"] == "1"
    assert decode_hash(stored) == written
    assert decode_hash({"state": "PENDING", "not_a_field": "x"}) == {"state": "PENDING"}


def test_a_record_sends_its_task_again_as_it_was_first_sent(celery_app, rclient) -> None:
    """The one "record -> send options" (recovery's republish, the API's retry): what
    the transport recorded from a Python publish gives back the publish's own options,
    priority 0 included."""
    import workers.runtime.signals  # noqa: F401 - the publish receivers

    task_id, queue = str(uuid.uuid4()), f"tests-resend-{uuid.uuid4().hex}"
    sent = {
        "args": [1, "two"], "kwargs": {"three": [3]}, "queue": queue, "priority": 0,
        "headers": {"claw_owner": "alice"}, "time_limit": 30, "soft_time_limit": 20,
    }  # fmt: skip
    celery_app.send_task("tests.record", task_id=task_id, **sent)
    try:
        raw = rclient.hgetall(task_key(task_id))
        assert TaskRecord.from_hash(raw).send_options() == sent
    finally:
        rclient.delete(task_key(task_id), *rclient.scan_iter(f"{queue}*"))


def test_a_record_whose_arguments_were_cut_is_not_sent_again() -> None:
    with pytest.raises(ValueError, match="too large"):
        TaskRecord(task_id="t", name="n", args_truncated=True).send_options()
