"""The task index's Redis keys (moving to workers/core/keys.py, section "Task index")."""

from __future__ import annotations

# --- Task index (workers/taskindex) ---------------------------------------------------
# Every task's record, its secondary indexes and counts, and the live feed. The layout is
# described in workers/taskindex/index.py. The index's Lua scripts get these keys in KEYS,
# or build the ones named after a record's values with functions generated from these
# builders (workers/taskindex/lua_scripts.py), so each is named here only.
PREFIX = "claw:"
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


def index_key(dimension: str | None = None, value: str | None = None) -> str:
    """Task ids scored by seq (sorted set): all of them, or those of one state, owner,
    queue or name."""
    return f"{PREFIX}idx:all" if dimension is None else f"{PREFIX}idx:{dimension}:{value}"


def owner_state_key(owner: str, state: str) -> str:
    """One owner's task ids in one state (sorted set)."""
    return f"{PREFIX}idx:owner:{owner}:state:{state}"


def counts_key(dimension: str | None = None, value: str | None = None) -> str:
    """Tasks per state (hash): all of them, or one owner's or queue's."""
    return f"{PREFIX}counts" if dimension is None else f"{PREFIX}counts:{dimension}:{value}"


def done_key(minute: int) -> str:
    """Tasks finished in one minute (counter; `minute` = epoch seconds // 60)."""
    return f"{PREFIX}done:{minute}"
