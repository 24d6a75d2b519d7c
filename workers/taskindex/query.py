"""Which tasks a list filter selects, and how the index finds them: one definition for the
gateway's `GET /list` (service/task_store.py, async) and the workers' bulk actions
(workers/tasks/bulk.py, which walk every match).

A filter is answered by walking the most selective index newest first and checking the
rest of the filter on each record's summary (page.lua reads both in one call).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from workers.core.keys import index_key, owner_label_key, owner_state_key
from workers.core.queues import SYSTEM_TASKS
from workers.taskindex.labels import SEPARATOR
from workers.taskindex.lua_scripts import page_call, source
from workers.taskindex.record import SUMMARY_FIELDS, decode_hash


@dataclass(frozen=True)
class ListQuery:
    limit: int = 50
    cursor: int | None = None
    state: str | None = None
    queue: str | None = None
    name: str | None = None
    owner: str | None = None
    # Names left out (the platform's housekeeping tasks, unless asked for).
    hidden: frozenset[str] = frozenset()
    # Tags and metadata pairs the tasks must all have (`workers.taskindex.labels`).
    labels: tuple[str, ...] = ()
    # The items of one batch (workers/tasks/batches.py).
    batch: str | None = None


# The most tasks one bulk action acts on (the newest that match); a dry run says when a
# filter selects more.
MAX_TASKS = 100_000


def query_of(filters: dict[str, Any]) -> ListQuery:
    """The list filter a bulk action was given (the keys of `GET /list`'s query, and
    `labels` and `batch`)."""
    return ListQuery(
        state=filters.get("status"), queue=filters.get("queue"), name=filters.get("name"),
        owner=filters.get("owner"), labels=tuple(filters.get("labels") or ()),
        hidden=frozenset() if filters.get("system") else SYSTEM_TASKS,
        batch=filters.get("batch"),
    )  # fmt: skip


@dataclass(frozen=True)
class Plan:
    """The index to walk and what each record walked must also match."""

    index: str
    fields: dict[str, str] = field(default_factory=dict)
    # A part of names (case-insensitive), when no task has the name given exactly.
    part: str | None = None
    hidden: frozenset[str] = frozenset()
    labels: frozenset[str] = frozenset()

    @property
    def checks(self) -> bool:
        """Whether records need checking (else every entry of the index matches)."""
        return bool(self.fields or self.part or self.hidden or self.labels)

    def matches(self, record: dict[str, Any] | None) -> bool:
        return (
            record is not None
            and all(record.get(f) == v for f, v in self.fields.items())
            and (self.part is None or self.part in (record.get("name") or "").lower())
            and record.get("name") not in self.hidden
            and self.labels <= set((record.get("labels") or "").split(SEPARATOR))
        )


def plan(query: ListQuery, name_indexed: bool = True) -> Plan:
    """The most selective index for the filters; `name_indexed`: whether some task has the
    name asked for exactly (else it is a part of names: "generate" finds
    generate_ai_response). A batch, then a tag or metadata pair, are taken to be the most
    selective."""
    part = None
    if query.name is not None and not name_indexed:
        part, query = query.name.lower(), dataclasses.replace(query, name=None)
    hidden = query.hidden if query.name is None and part is None else frozenset()
    given = {"owner": query.owner, "state": query.state, "queue": query.queue,
             "name": query.name}  # fmt: skip
    filters = {k: v for k, v in given.items() if v is not None}
    labels = set(query.labels)
    if query.batch is not None:
        key = index_key("batch_id", query.batch)
    elif labels:
        label = query.labels[0]
        labels.discard(label)
        owner = filters.pop("owner", None)
        key = owner_label_key(owner, label) if owner else index_key("label", label)
    elif "owner" in filters and "state" in filters:
        key = owner_state_key(filters.pop("owner"), filters.pop("state"))
    elif "owner" in filters:
        key = index_key("owner", filters.pop("owner"))
    elif "state" in filters:
        key = index_key("state", filters.pop("state"))
    elif "name" in filters:
        key = index_key("name", filters.pop("name"))
    elif "queue" in filters:
        key = index_key("queue", filters.pop("queue"))
    else:
        key = index_key()
    return Plan(key, filters, part, hidden, frozenset(labels))


def page_rows(flat: list[Any]) -> list[tuple[float, dict[str, Any] | None]]:
    """page.lua's flat reply as (score, summary) pairs; the summary is None for a task
    pruned while the page was read."""
    out: list[tuple[float, dict[str, Any] | None]] = []
    for i in range(0, len(flat), 3):
        row = dict(zip(SUMMARY_FIELDS, flat[i + 2], strict=True))
        record = decode_hash({k: v for k, v in row.items() if v}) if row["task_id"] else None
        out.append((float(flat[i + 1]), record))
    return out


def walk(client: Any, query: ListQuery, batch: int = 500) -> Iterator[dict[str, Any]]:
    """Every task the filter selects, newest first, as its summary (a blocking client with
    `decode_responses`): what a bulk action goes through."""
    name_indexed = query.name is None or bool(client.exists(index_key("name", query.name)))
    chosen = plan(query, name_indexed)
    page = client.register_script(source("page"))
    upper = "+inf"
    while True:
        keys, args = page_call(chosen.index, upper, batch, SUMMARY_FIELDS)
        rows = page_rows(page(keys=keys, args=args))
        for _, record in rows:
            if chosen.matches(record):
                yield record  # type: ignore[misc]
        if len(rows) < batch:
            return
        upper = f"({int(rows[-1][0])}"
