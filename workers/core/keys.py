"""Every Redis key the platform writes, and its builder: the one place they are named.

Ours all start with `claw:` (`PREFIX`); Lua scripts get them in KEYS (or build the ones
named after a record's values with functions generated from the builders here). Keys of
Celery and kombu that the platform reads are named at the end, as theirs.

- `claw:task:<id>` hash, a task's record (`TaskRecord`), kept `TASK_HISTORY_TTL`;
  `claw:task:<id>:chunks` list, its streamed output, kept as long.
- `claw:idx:...`, `claw:counts...`, `claw:seq`, `claw:expiry`, `claw:done:<minute>`: the
  task index's sorted sets, hashes and counters, pruned with the records.
- `claw:feed` stream, the live feed, capped at about `FEED_MAXLEN` entries.
- `claw:conv:<ns>:<conversation>:{turns,meta,tasks}` list, hash, set: conversation
  memory, kept `CONVERSATION_TTL`.
- `claw:kb:<ns>:<kb>:docs` hash and `...:ver:<document>:<version>` hashes: a knowledge base.
- `claw:session:<digest>`, `claw:wsticket:<digest>` strings: browser sessions
  (`SESSION_TTL`) and websocket tickets (30 s); `claw:session:ended` a pub/sub channel.
- `claw:idem:<digest>` string: an Idempotency-Key's task id, 24 h.
- `claw:workers` hash and `claw:workers:seen` sorted set: the worker registry.
- `claw:ratelimit:<name>[:owner:<o>|:waiting]` sorted sets, for the window;
  `claw:ratelimit:deferrals:<id>` counter, 24 h.
- `claw:usage:{h,d}:<stamp>` hashes, `claw:usage:recent:<ns>` sorted set,
  `claw:usage:cost:<ns>:<day>` string: AI usage counters; `claw:budget:<ns>` hash.
- `claw:inbox:<ns>` list (capped) and `claw:inbox:<ns>:delivered` set: a user's inbox.
- `claw:failed:<minute>` counter, 2 h; `claw:health:report` string.
- `claw:redbeat...`: RedBeat's schedule and lock (its own layout).
- `claw:schedules` hash (id -> owner) and `claw:schedules:<ns>` sets: owners' schedules,
  whose entries are RedBeat's (`claw:redbeat:schedules:<id>`).

`<ns>` is an owner's namespace (`workers.core.ownership.namespace`): it has no ':', so two
owners' ids never collide.
"""

from __future__ import annotations

from workers.core.ownership import namespace

PREFIX = "claw:"

# --- Gateway: sessions, tickets, idempotency ------------------------------------------
# Server-wide (pub/sub ignores Redis databases); session digests are random, so one
# deployment's message never names another's session.
SESSION_ENDED_CHANNEL = f"{PREFIX}session:ended"


def session_key(digest: str) -> str:
    """A browser session (string: its grant), by the digest of its token."""
    return f"{PREFIX}session:{digest}"


def ticket_key(digest: str) -> str:
    """A single-use websocket ticket (string: its grant), by the digest of its token."""
    return f"{PREFIX}wsticket:{digest}"


def idempotency_key(digest: str) -> str:
    """The task id an Idempotency-Key gave (string), by the digest of owner and key."""
    return f"{PREFIX}idem:{digest}"


def webhook_secret_key(owner: str) -> str:
    """An owner's signing secrets of task webhooks (hash: `current`, `previous`,
    `previous_until`), `workers.notify.task_webhooks`."""
    return f"{PREFIX}webhook-secret:{owner}"


# --- Operations -----------------------------------------------------------------------
HEALTH_REPORT_KEY = f"{PREFIX}health:report"
WORKERS_HASH = f"{PREFIX}workers"  # hash: hostname -> JSON (queues, concurrency, pid, ...)
WORKERS_SEEN = f"{PREFIX}workers:seen"  # sorted set: hostname -> last heartbeat
REDBEAT_PREFIX = f"{PREFIX}redbeat"
# Owners' schedules (workers/runtime/schedules.py): hash, schedule id -> owner.
SCHEDULES = f"{PREFIX}schedules"


def owner_schedules_key(owner: str) -> str:
    """An owner's schedule ids (set), counted against SCHEDULES_PER_OWNER."""
    return f"{SCHEDULES}:{namespace(owner)}"


def failed_key(minute: int) -> str:
    """Tasks failed in one minute (counter; `minute` = epoch seconds // 60)."""
    return f"{PREFIX}failed:{minute}"


# --- Rate limits ----------------------------------------------------------------------
def rate_limit_keys(name: str, owner_segment: str) -> list[str]:
    """A limit's sliding window (all owners), one owner's window, and its waiting owners."""
    base = f"{PREFIX}ratelimit:{name}"
    return [base, f"{base}:owner:{owner_segment}", f"{base}:waiting"]


def deferrals_key(task_id: str) -> str:
    """How often a task was deferred by a rate limit (counter)."""
    return f"{PREFIX}ratelimit:deferrals:{task_id}"


# --- Conversations and knowledge bases (per owner) ------------------------------------
def conversation_key(owner: str | None, conversation_id: str, part: str) -> str:
    """A conversation's `turns` (list), `meta` (hash) or `tasks` (set)."""
    return f"{PREFIX}conv:{namespace(owner)}:{conversation_id}:{part}"


def kb_prefix(owner: str | None, kb_id: str) -> str:
    """The prefix of a knowledge base's keys."""
    return f"{PREFIX}kb:{namespace(owner)}:{kb_id}:"


def kbs_key(owner: str | None) -> str:
    """An owner's knowledge bases (set of kb ids): each has at least one document."""
    return f"{PREFIX}kbs:{namespace(owner)}"


def docs_key(owner: str | None, kb_id: str) -> str:
    """The knowledge base's document map; it exists while the base has a document."""
    return f"{kb_prefix(owner, kb_id)}docs"


def version_key(owner: str | None, kb_id: str, document_id: str, version: str) -> str:
    """One version of a document's chunks and vectors (hash)."""
    return f"{kb_prefix(owner, kb_id)}ver:{document_id}:{version}"


# --- Notifications --------------------------------------------------------------------
# A user id may contain ':' (`in_app` recipients): namespaced, "x:delivered"'s inbox is not
# the delivered set of "x".
def inbox_key(user_id: str) -> str:
    """A user's in-app notifications, newest first (list)."""
    return f"{PREFIX}inbox:{namespace(user_id)}"


def delivered_key(user_id: str) -> str:
    """The notification ids already in a user's inbox (set): a redelivery adds none."""
    return f"{inbox_key(user_id)}:delivered"


# --- Usage and budgets (workers/ai/usage.py, service/budgets.py) ----------------------
def usage_bucket_key(granularity: str, stamp: str) -> str:
    """AI usage of one UTC hour (`h`, stamp YYYYMMDDHH) or day (`d`, YYYYMMDD): hash of
    `<owner>|<model>|<metric>` -> total."""
    return f"{PREFIX}usage:{granularity[0]}:{stamp}"


def usage_recent_key(owner: str | None) -> str:
    """An owner's AI tasks finished in the last minute (sorted set `<task>|<tokens>` ->
    when), for tokens-per-minute budgets."""
    return f"{PREFIX}usage:recent:{namespace(owner)}"


def usage_cost_key(owner: str | None, day: str) -> str:
    """An owner's AI cost (USD) of one UTC day (YYYYMMDD), for cost-per-day budgets."""
    return f"{PREFIX}usage:cost:{namespace(owner)}:{day}"


def budget_key(owner: str | None) -> str:
    """An owner's budget set through the admin API (hash: `tokens_per_minute`,
    `cost_per_day`); a missing field is the setting's default."""
    return f"{PREFIX}budget:{namespace(owner)}"


# --- Task index (workers/taskindex) ---------------------------------------------------
# Every task's record, its secondary indexes and counts, and the live feed. The layout is
# described in workers/taskindex/index.py. The index's Lua scripts get these keys in KEYS,
# or build the ones named after a record's values with functions generated from these
# builders (workers/taskindex/lua_scripts.py), so each is named here only.
SEQ_KEY = f"{PREFIX}seq"  # counter: a task's number, its score in every index
EXPIRY_KEY = f"{PREFIX}expiry"  # sorted set: task id -> when its record may be pruned
# The live feed (stream): task states, progress, chunks, notifications.
FEED_STREAM = f"{PREFIX}feed"
FEED_MAXLEN = 100_000  # entries kept, about (XADD MAXLEN ~)


def task_key(task_id: str) -> str:
    """A task's record (hash, `workers.taskindex.record.TaskRecord`)."""
    return f"{PREFIX}task:{task_id}"


def chunks_key(task_id: str) -> str:
    """A task's output chunks (list), replayed to late subscribers."""
    return f"{task_key(task_id)}:chunks"


def events_key(task_id: str) -> str:
    """A task's event log (list of JSON events: states, progress, chunks), numbered from 1
    in order; the per-task SSE stream replays it (`GET /tasks/{id}/stream`). Kept as long
    as the task's record."""
    return f"{task_key(task_id)}:events"


def webhooks_key(task_id: str) -> str:
    """A task's webhook delivery log (list of JSON attempts, oldest first)."""
    return f"{task_key(task_id)}:webhooks"


# Task events that a task's webhook asked for (stream: task_id, event, seq), written by the
# index's scripts with the event itself; workers turn each into a delivery task.
WEBHOOK_STREAM = f"{PREFIX}webhooks"
WEBHOOK_STREAM_MAXLEN = 100_000


def index_key(dimension: str | None = None, value: str | None = None) -> str:
    """Task ids scored by seq (sorted set): all of them, or those of one state, owner,
    queue or name."""
    return f"{PREFIX}idx:all" if dimension is None else f"{PREFIX}idx:{dimension}:{value}"


def owner_state_key(owner: str, state: str) -> str:
    """One owner's task ids in one state (sorted set)."""
    return f"{PREFIX}idx:owner:{owner}:state:{state}"


def batch_key(batch_id: str) -> str:
    """A batch (hash: owner, total, published, ended, sealed, cancelled, done_at;
    workers/tasks/batches.py). Its items are indexed as `index_key("batch_id", id)` and
    counted per state in `counts_key("batch_id", id)`."""
    return f"{PREFIX}batch:{batch_id}"


# The fields of a batch's hash (`batch_key`): not a task record's.
BATCH_FIELDS = ("owner", "total", "created_at", "published", "ended", "sealed", "cancelled",
                "done_at")  # fmt: skip


def batch_items_key(batch_id: str) -> str:
    """A batch's submissions waiting to be published (list of JSON, in order)."""
    return f"{batch_key(batch_id)}:items"


def owner_label_key(owner: str, label: str) -> str:
    """One owner's task ids with one tag or metadata pair (sorted set;
    `workers.taskindex.labels`). `index_key("label", label)` has everyone's."""
    return f"{PREFIX}idx:owner:{owner}:label:{label}"


def counts_key(dimension: str | None = None, value: str | None = None) -> str:
    """Tasks per state (hash): all of them, or one owner's or queue's."""
    return f"{PREFIX}counts" if dimension is None else f"{PREFIX}counts:{dimension}:{value}"


# Tasks per state of the platform's housekeeping tasks (`workers.core.queues.SYSTEM_TASKS`),
# also counted in `counts_key()`: what admins' default counts leave out.
SYSTEM_COUNTS_KEY = f"{PREFIX}counts:system"


def done_key(minute: int) -> str:
    """Tasks finished in one minute (counter; `minute` = epoch seconds // 60)."""
    return f"{PREFIX}done:{minute}"


# --- Celery's and kombu's keys that the platform reads ---------------------------------
CELERY_RESULT_KEY = "celery-task-meta-{}"  # Celery's result backend: a task's result meta
KOMBU_UNACKED_KEY = "unacked"  # kombu's Redis transport: delivered, unacknowledged messages
KOMBU_UNACKED_INDEX_KEY = "unacked_index"  # ... and when each was delivered
