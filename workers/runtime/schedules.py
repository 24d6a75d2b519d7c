"""Owners' schedules: RedBeat entries that Beat sends as their owners' tasks.

An owner's schedule (`POST /api/v1/schedules`) is a RedBeat entry named `:schedules:<id>`
(the hash `claw:redbeat:schedules:<id>`: RedBeat's `definition` and `meta`, and `spec`, the
schedule as the API shows it) in RedBeat's schedule sorted set. Beat reads the due entries
from Redis at every tick, so it sends a new schedule and stops a deleted one without a
restart. Each firing carries its owner and schedule in its headers (`OWNER_HEADER`,
`SCHEDULE_HEADER`): the record written with the message (`workers.runtime.signals`) makes
it the owner's task, with its `schedule_id`.

Beat notes on the schedule what each firing did (`record_firing`): the task it sent, or
why it sent none: an AI firing (`generate_ai_response`) whose owner is over its AI budget
is skipped (`workers.runtime.beat`, `workers.ai.budgets`), and due again at its next time.

RedBeat's JSON of a crontab has no time zone: the entry keeps it in its definition
(`ZonedScheduleEntry`, which Beat loads every entry with) and reads the crontab in it
(`ZonedCrontab`). Blocking calls: the gateway makes them in its thread pool.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celery import Celery
from celery.schedules import ParseException, crontab, schedule
from redbeat import RedBeatSchedulerEntry  # type: ignore[import-untyped]
from redbeat.decoder import RedBeatJSONEncoder  # type: ignore[import-untyped]
from redbeat.schedulers import ensure_conf, get_redis  # type: ignore[import-untyped]

from workers.ai.budgets import exceeded_names
from workers.core.keys import SCHEDULES, owner_schedules_key
from workers.taskindex.status import iso

logger = logging.getLogger(__name__)

# The schedule as the API shows it (JSON), a field of the entry's hash beside RedBeat's.
SPEC_FIELD = "spec"
# Written by Beat beside them: what the last firing did (JSON, `record_firing`) and how
# many firings were skipped.
LAST_FIRING_FIELD = "last_firing"
SKIPPED_FIELD = "skipped"
# (name, lowest, highest) of the five fields of a cron expression, in order.
CRON_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day_of_month", 1, 31),
    ("month_of_year", 1, 12),
    ("day_of_week", 0, 6),
)
# Numbers, `*`, lists, ranges and steps; months and weekdays may be named (jan, mon).
_NUMERIC = re.compile(r"[0-9*,/-]+")
_NAMED = re.compile(r"[0-9a-z*,/-]+")


class ScheduleInvalid(ValueError):
    """A schedule that cannot be kept: `field` names the request field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class TooManySchedules(Exception):
    """The owner has its setting's number of schedules already."""


class ZonedCrontab(crontab):
    """A crontab read in its own IANA time zone rather than the app's (UTC): `0 9 * * *`
    in Europe/Paris fires at 9:00 in Paris, summer and winter."""

    def __init__(self, *args: Any, zone: str, **kwargs: Any) -> None:
        self.zone = ZoneInfo(zone)
        super().__init__(*args, nowfun=self._zoned_now, **kwargs)

    def _zoned_now(self) -> datetime:
        return datetime.now(self.zone)

    @property
    def tz(self) -> tzinfo:  # type: ignore[override]  # Celery's stubs say str
        return self.zone


class ZonedScheduleEntry(RedBeatSchedulerEntry):
    """A RedBeat entry whose crontab has a time zone, kept in its definition. Entries
    without one (the operators' `beat_schedule`) are stored as RedBeat stores them."""

    def __init__(
        self, name: str | None = None, task: str | None = None, schedule: Any = None,
        *args: Any, timezone: str | None = None, **kwargs: Any,
    ) -> None:  # fmt: skip
        if timezone and isinstance(schedule, crontab) and not isinstance(schedule, ZonedCrontab):
            schedule = ZonedCrontab(**cron_fields(schedule), zone=timezone)
        super().__init__(name, task, schedule, *args, **kwargs)
        self.timezone = timezone

    @classmethod
    def from_key(cls, key: str, app: Celery | None = None) -> ZonedScheduleEntry:
        """The entry stored at `key`. One that cannot be read is a KeyError, which Beat
        logs and drops from its schedule: any other error would end Beat's tick, and Beat
        with it, for every schedule."""
        try:
            return super().from_key(key, app=app)
        except (TypeError, ValueError) as exc:
            logger.error("schedule entry %s cannot be read: %r", key, exc)
            raise KeyError(key) from exc

    def definition(self) -> dict[str, Any]:
        """RedBeat's definition (`RedBeatSchedulerEntry.save`, celery-redbeat 2.4.2) with
        the time zone."""
        definition = {
            "name": self.name, "task": self.task, "args": self.args, "kwargs": self.kwargs,
            "options": self.options, "schedule": self.schedule, "enabled": self.enabled,
        }  # fmt: skip
        if self.timezone:
            definition["timezone"] = self.timezone
        return definition

    def write(self, pipe: Any) -> None:
        """Queue RedBeat's writes of a saved entry on `pipe`."""
        meta = {"last_run_at": self.last_run_at}
        pipe.hset(self.key, "definition", json.dumps(self.definition(), cls=RedBeatJSONEncoder))
        pipe.hsetnx(self.key, "meta", json.dumps(meta, cls=RedBeatJSONEncoder))
        pipe.zadd(self.app.redbeat_conf.schedule_key, {self.key: self.score})

    def save(self) -> ZonedScheduleEntry:
        with get_redis(self.app).pipeline() as pipe:
            self.write(pipe)
            pipe.execute()
        return self

    def next_run_at(self) -> datetime:
        """When Beat sends it next (UTC, to the second). RedBeat's `due_at` counts the
        time left twice."""
        left = max(self.schedule.remaining_estimate(self.last_run_at), timedelta(0))
        when = datetime.now(UTC) + left + timedelta(milliseconds=500)
        return when.replace(microsecond=0)


def cron_fields(sched: crontab) -> dict[str, Any]:
    return {name: getattr(sched, f"_orig_{name}") for name, _, _ in CRON_FIELDS}


def zone_of(name: str) -> str:
    """The IANA time zone `name`, checked."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleInvalid("timezone", f"{name!r} is not an IANA time zone") from None
    return name


def parse_cron(expression: str, zone: str) -> ZonedCrontab:
    """A five-field cron expression (minute hour day-of-month month day-of-week) read in
    `zone`; ScheduleInvalid names the field of the expression at fault."""
    parts = expression.split()
    if len(parts) != len(CRON_FIELDS):
        raise ScheduleInvalid(
            "cron", f"{len(parts)} fields; 5 expected: minute hour day-of-month month day-of-week"
        )
    for (name, low, high), value in zip(CRON_FIELDS, parts, strict=True):
        pattern = _NUMERIC if name in ("minute", "hour", "day_of_month") else _NAMED
        try:
            if not pattern.fullmatch(value.lower()):
                raise ValueError(value)
            crontab(**{name: value.lower()})
        except (ValueError, ParseException):
            raise ScheduleInvalid(
                "cron", f"{name} {value!r} is not valid ({low}-{high}, *, a,b, a-b, */n)"
            ) from None
    try:
        return ZonedCrontab(
            **{name: v.lower() for (name, _, _), v in zip(CRON_FIELDS, parts, strict=True)},
            zone=zone,
        )
    except ValueError as exc:  # a day that never comes: 31 in February
        raise ScheduleInvalid("cron", str(exc)) from None


def shortest_gap(cron: Any) -> float:
    """The fewest seconds between two firings of a crontab (its times of day, wrapping
    around midnight; days left out only lengthen the gaps). `Any`: Celery's stubs lack
    the parsed fields."""
    times = sorted(h * 60 + m for h in cron.hour for m in cron.minute)
    gaps = [b - a for a, b in itertools.pairwise(times)] + [times[0] + 1440 - times[-1]]
    return min(gaps) * 60.0


def entry_name(schedule_id: str) -> str:
    return f":schedules:{schedule_id}"


class ScheduleStore:
    """Owners' schedules: RedBeat entries, and who owns which (`SCHEDULES`, an owner's
    set). Blocking: RedBeat's own Redis client."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.conf = ensure_conf(app)

    def create(
        self, spec: dict[str, Any], *, task: str, kwargs: dict[str, Any],
        options: dict[str, Any], sched: crontab | schedule, limit: int,
    ) -> dict[str, Any]:  # fmt: skip
        """Store a schedule (`spec`: its API view, with `id` and `owner`); Beat sends it
        from its next tick. TooManySchedules when the owner has `limit` already."""
        client = get_redis(self.app)
        schedule_id, owner = spec["id"], spec["owner"]
        owned = owner_schedules_key(owner)
        # Counted after adding, so two requests at once cannot both pass the limit.
        client.sadd(owned, schedule_id)
        if client.scard(owned) > limit:
            client.srem(owned, schedule_id)
            raise TooManySchedules(f"{owner} has {limit} schedules")
        entry = ZonedScheduleEntry(
            name=entry_name(schedule_id), task=task, schedule=sched, kwargs=kwargs,
            options=options, timezone=spec["timezone"] if spec.get("cron") else None,
            app=self.app,
        )  # fmt: skip
        try:
            with client.pipeline() as pipe:
                entry.write(pipe)
                pipe.hset(entry.key, SPEC_FIELD, json.dumps(spec))
                pipe.hset(SCHEDULES, schedule_id, owner)
                pipe.execute()
        except Exception:
            client.srem(owned, schedule_id)
            raise
        return view(entry, spec)

    def get(self, schedule_id: str) -> dict[str, Any] | None:
        found = self._load([schedule_id])
        return found[0] if found else None

    def owned_by(self, owner: str | None) -> list[dict[str, Any]]:
        """An owner's schedules, or everyone's (None), oldest first."""
        client = get_redis(self.app)
        ids = client.smembers(owner_schedules_key(owner)) if owner else client.hkeys(SCHEDULES)
        return sorted(self._load(ids), key=lambda s: (s["created_at"], s["id"]))

    def delete(self, schedule_id: str, owner: str) -> None:
        """Beat sends it no more from its next tick (one already sent runs)."""
        entry = ZonedScheduleEntry(name=entry_name(schedule_id), app=self.app)
        with get_redis(self.app).pipeline() as pipe:
            pipe.zrem(self.conf.schedule_key, entry.key)
            pipe.delete(entry.key)
            pipe.hdel(SCHEDULES, schedule_id)
            pipe.srem(owner_schedules_key(owner), schedule_id)
            pipe.execute()

    def _load(self, ids: Iterable[str]) -> list[dict[str, Any]]:
        ids = list(ids)
        keys = [ZonedScheduleEntry.generate_key(self.app, entry_name(i)) for i in ids]
        with get_redis(self.app).pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(key, "definition", "meta", SPEC_FIELD, LAST_FIRING_FIELD, SKIPPED_FIELD)
            rows = pipe.execute()
        found = []
        for definition, meta, spec, last_firing, skipped in rows:
            # A schedule deleted while Beat was sending it may leave RedBeat's `meta`.
            if definition and spec:
                entry = ZonedScheduleEntry(
                    app=self.app, **ZonedScheduleEntry.decode_definition(definition),
                    **_meta(meta),
                )  # fmt: skip
                found.append(view(
                    entry, json.loads(spec),
                    last_firing=json.loads(last_firing) if last_firing else None,
                    skipped=int(skipped or 0),
                ))  # fmt: skip
        return found


def sent_firing(task_id: str | None, now: float) -> dict[str, Any]:
    """A firing that sent its task."""
    return {"at": iso(now), "status": "sent", "task_id": task_id}


def skipped_firing(budget: dict[str, Any], now: float) -> dict[str, Any]:
    """An AI firing not sent: its owner was over `budget` (`workers.ai.budgets`)."""
    return {
        "at": iso(now), "status": "skipped", "reason": "over_budget",
        "message": f"skipped: over budget ({exceeded_names(budget)})", "budget": budget,
    }  # fmt: skip


def record_firing(client: Any, key: str, firing: dict[str, Any]) -> None:
    """Note on the schedule at `key` (its entry's hash) what a firing did; a skipped one is
    counted too. A schedule deleted meanwhile stays deleted: nothing is written."""

    def write(pipe: Any) -> None:
        if not pipe.hexists(key, SPEC_FIELD):
            return
        pipe.multi()
        pipe.hset(key, LAST_FIRING_FIELD, json.dumps(firing))
        if firing["status"] == "skipped":
            pipe.hincrby(key, SKIPPED_FIELD, 1)

    client.transaction(write, key)


def _meta(raw: str | None) -> dict[str, Any]:
    meta = ZonedScheduleEntry.decode_meta(raw)
    return {k: meta[k] for k in ("last_run_at", "total_run_count") if meta.get(k) is not None}


def view(
    entry: ZonedScheduleEntry, spec: dict[str, Any], *,
    last_firing: dict[str, Any] | None = None, skipped: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """The API's view of a schedule: what its owner gave, when it runs, and what its
    firings did (`runs` counts them all, `skipped` those that sent no task)."""
    runs = entry.total_run_count or 0
    return {
        **spec,
        "next_run_at": entry.next_run_at().isoformat(),
        "last_run_at": entry.last_run_at.astimezone(UTC).isoformat() if runs else None,
        "runs": runs,
        "skipped": skipped,
        "last_firing": last_firing,
    }
