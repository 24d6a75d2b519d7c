"""The task index's Lua scripts, one contract each: given these KEYS and ARGV (built by the
script's builder), the script writes this and returns that. Against a real Redis, on a
database of their own that each test starts empty."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from workers.core.keys import (
    EXPIRY_KEY,
    FEED_STREAM,
    SEQ_KEY,
    SYSTEM_COUNTS_KEY,
    WEBHOOK_STREAM,
    batch_key,
    chunks_key,
    counts_key,
    done_key,
    events_key,
    index_key,
    owner_state_key,
    task_key,
)
from workers.taskindex.lua_scripts import (
    CHUNKS_TTL,
    CLAIM_CANCELLED,
    CLAIM_DONE,
    CLAIM_DUPLICATE,
    CLAIM_RUN,
    DONE_TTL,
    PARTS,
    Call,
    RecordUpdate,
    cancel_call,
    claim_call,
    claim_start_call,
    feed_call,
    link_retry_call,
    page_call,
    prune_call,
    publish_call,
    refresh_call,
    refuse_call,
    seal_batch_call,
    source,
    status_call,
    store_result_call,
    unclaim_call,
)

DB = 9
TTL = 600


@pytest.fixture
def client(redis_server: Any) -> Iterator[redis.Redis]:
    c = redis.Redis(port=redis_server.port, db=DB, decode_responses=True)
    c.flushdb()
    yield c
    c.flushdb()
    c.close()


def run(client: redis.Redis, script: str, call: Call) -> Any:
    keys, args = call
    return client.register_script(source(script))(keys=keys, args=args)


def new_id() -> str:
    return str(uuid.uuid4())


def feed_events(client: redis.Redis) -> list[dict[str, Any]]:
    return [json.loads(fields["event"]) for _, fields in client.xrange(FEED_STREAM)]


def pending(task_id: str, **fields: Any) -> RecordUpdate:
    fields = {"name": "t", "queue": "q", "owner": "alice", **fields}
    return RecordUpdate(task_id=task_id, state="PENDING", attempt=0, fields=fields, ttl=TTL)


def test_every_script_has_a_contract_here() -> None:
    tested = {name.removeprefix("test_").split("_lua_")[0] for name in globals()}
    assert set(PARTS) <= tested


def test_record_lua_creates_indexes_counts_and_a_feed_event_then_finishes_once(client) -> None:
    tid, now = new_id(), time.time()
    update = RecordUpdate(
        task_id=tid, state="PENDING", attempt=0, fields={"name": "t", "queue": "q",
        "owner": "alice", "priority": 7}, ttl=TTL, now=now,
    )  # fmt: skip
    assert run(client, "record", update.call()) == [1, "", "PENDING"]
    record = client.hgetall(task_key(tid))
    assert record["task_id"] == tid and record["state"] == "PENDING" and record["priority"] == "7"
    # (Lua keeps 14 significant digits of a number it writes.)
    assert float(record["created_at"]) == float(record["updated_at"]) == pytest.approx(now)
    seq = int(record["seq"])
    for key in (index_key(), index_key("state", "PENDING"), index_key("owner", "alice"),
                index_key("queue", "q"), index_key("name", "t"),
                owner_state_key("alice", "PENDING")):  # fmt: skip
        assert client.zscore(key, tid) == seq, key
    for key in (counts_key(), counts_key("owner", "alice"), counts_key("queue", "q")):
        assert client.hgetall(key) == {"PENDING": "1"}, key
    assert client.zscore(EXPIRY_KEY, tid) == pytest.approx(now + TTL)

    done = RecordUpdate(
        task_id=tid, state="SUCCESS", attempt=0, fields={"result_preview": "[]"},
        event={"result": []}, ttl=TTL, now=now + 1,
    )  # fmt: skip
    assert run(client, "record", done.call()) == [1, "PENDING", "SUCCESS"]
    assert float(client.hget(task_key(tid), "finished_at")) == pytest.approx(now + 1)
    assert client.get(done_key(int((now + 1) // 60))) == "1"
    assert 0 < client.ttl(done_key(int((now + 1) // 60))) <= DONE_TTL
    assert client.zscore(index_key("state", "PENDING"), tid) is None
    assert client.zscore(owner_state_key("alice", "SUCCESS"), tid) == seq
    assert client.hgetall(counts_key("queue", "q")) == {"SUCCESS": "1"}  # a 0 is removed

    late = RecordUpdate(task_id=tid, state="STARTED", attempt=0, fields={"worker": "w"}, ttl=TTL)
    assert run(client, "record", late.call()) == [0, "SUCCESS", "SUCCESS"]
    assert "worker" not in client.hgetall(task_key(tid))  # a finished task's fields stay
    events = feed_events(client)
    assert [(e["state"], e.get("prev")) for e in events] == [
        ("PENDING", None),
        ("SUCCESS", "PENDING"),
    ]
    assert events[0]["owner"] == "alice" and events[1]["result"] == []  # [] stays a list
    # The same events, numbered from 1, in the task's event log (its SSE stream).
    assert [e["seq"] for e in events] == [1, 2]
    logged = [json.loads(e) for e in client.lrange(events_key(tid), 0, -1)]
    assert logged == [{k: v for k, v in e.items() if k != "id"} for e in events]
    # Only KEYS and the keys named after the record's state, owner, queue and name.
    named = {index_key(d, v) for d, v in (("state", "PENDING"), ("state", "SUCCESS"),
             ("owner", "alice"), ("queue", "q"), ("name", "t"))}  # fmt: skip
    named |= {owner_state_key("alice", s) for s in ("PENDING", "SUCCESS")}
    named |= {counts_key("owner", "alice"), counts_key("queue", "q"), events_key(tid)}
    passed = set(update.call()[0]) | set(done.call()[0])
    assert set(client.keys("*")) <= passed | named


def test_record_lua_keeps_the_first_owner_and_counts_a_state_under_one_learned_late(
    client,
) -> None:
    tid = new_id()
    started = RecordUpdate(task_id=tid, state="STARTED", attempt=0, fields={"name": "t"}, ttl=TTL)
    run(client, "record", started.call())
    run(client, "record", pending(tid, owner="bob").call())  # the publisher's record, late
    run(client, "record", pending(tid, owner="mallory").call())
    assert client.hget(task_key(tid), "owner") == "bob"
    assert client.hget(task_key(tid), "state") == "STARTED"
    assert client.hgetall(counts_key("owner", "bob")) == {"STARTED": "1"}
    assert client.zscore(owner_state_key("bob", "STARTED"), tid) is not None
    assert not client.exists(counts_key("owner", "mallory"))


def test_record_builder_refuses_fields_and_states_the_record_does_not_have() -> None:
    with pytest.raises(ValueError, match="not fields of TaskRecord: colour"):
        RecordUpdate(task_id="x", fields={"colour": "red"}, ttl=TTL)
    with pytest.raises(ValueError, match="not a task state"):
        RecordUpdate(task_id="x", state="PROGRESS", ttl=TTL)


def test_publish_lua_writes_the_record_and_runs_kombus_commands_in_one_call(client) -> None:
    tid, queue = new_id(), "tests-q"
    listener = client.pubsub(ignore_subscribe_messages=True)
    listener.subscribe("tests-events")
    try:
        commands = [
            ("lpush", queue, "message"),
            ("publish", "tests-events", "task-sent"),
            ("pexpire", f"{queue}:9", 60_000),
        ]
        client.lpush(f"{queue}:9", "older")
        keys, args = publish_call(pending(tid), commands)
        assert keys[7:] == [queue, f"{queue}:9"]  # kombu's keys, after record's
        assert run(client, "publish", (keys, args)) == [1, "", "PENDING"]
        assert client.lrange(queue, 0, -1) == ["message"]
        assert 0 < client.pttl(f"{queue}:9") <= 60_000
        assert client.hget(task_key(tid), "state") == "PENDING"
        message = None
        deadline = time.monotonic() + 5
        while message is None and time.monotonic() < deadline:
            message = listener.get_message(timeout=0.5)
        assert message is not None and message["data"] == "task-sent"
    finally:
        listener.close()
    with pytest.raises(ValueError, match="does not run del"):
        publish_call(pending(tid), [("del", queue, "")])


def test_store_result_lua_stores_publishes_and_records_and_never_overwrites_success(
    client,
) -> None:
    tid, result_key = new_id(), "tests-meta"
    run(client, "record", pending(tid).call())
    listener = client.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(result_key)
    try:
        success = json.dumps({"status": "SUCCESS", "result": 1})
        done = RecordUpdate(task_id=tid, state="SUCCESS", attempt=0, ttl=TTL)
        assert run(client, "store_result", store_result_call(done, result_key, success, 60)) == [
            1,
            "PENDING",
            "SUCCESS",
        ]
        assert client.get(result_key) == success and 0 < client.ttl(result_key) <= 60
        message = None
        deadline = time.monotonic() + 5
        while message is None and time.monotonic() < deadline:
            message = listener.get_message(timeout=0.5)
        assert message is not None and message["data"] == success
    finally:
        listener.close()
    failure = RecordUpdate(task_id=tid, state="FAILURE", attempt=0, ttl=TTL)
    late = store_result_call(failure, result_key, json.dumps({"status": "FAILURE"}), None)
    assert run(client, "store_result", late) == [-1]
    assert client.get(result_key) == success
    assert client.hget(task_key(tid), "state") == "SUCCESS"


def test_claim_lua_lets_one_delivery_run_and_names_why_another_may_not(client) -> None:
    def claim(task_id: str, token: str, now: float) -> int:
        return run(client, "claim", ([task_key(task_id)], [token, now, 10]))

    tid, now = new_id(), time.time()
    run(client, "record", pending(tid).call())
    assert claim(tid, "a", now) == CLAIM_RUN
    record = client.hgetall(task_key(tid))
    assert (record["claimed"], record["claimed_by"], record["deliveries"]) == ("1", "a", "1")
    assert claim(tid, "a", now) == CLAIM_RUN  # the same delivery asking again
    assert claim(tid, "b", now + 5) == CLAIM_DUPLICATE  # "a"'s claim is fresh
    assert client.hget(task_key(tid), "claimed_by") == "a"
    assert claim(tid, "b", now + 11) == CLAIM_RUN  # stale: "a" is gone
    assert client.hget(task_key(tid), "deliveries") == "3"

    cancelled, finished = new_id(), new_id()
    client.hset(task_key(cancelled), "cancel_requested", "1")
    client.hset(task_key(finished), "state", "REVOKED")
    assert claim(cancelled, "a", now) == CLAIM_CANCELLED
    assert claim(finished, "a", now) == CLAIM_DONE
    assert "claimed" not in client.hgetall(task_key(cancelled)) | client.hgetall(task_key(finished))


def test_claim_start_lua_stores_started_only_when_the_claim_is_won(client) -> None:
    tid, result_key, now = new_id(), "tests-meta", time.time()
    run(client, "record", pending(tid).call())
    started = RecordUpdate(task_id=tid, state="STARTED", attempt=0, ttl=TTL)
    meta = json.dumps({"status": "STARTED"})

    def start(token: str) -> list[int]:
        return run(
            client, "claim_start",
            claim_start_call(started, result_key, meta, 60, token=token, now=now),
        )  # fmt: skip

    assert start("a") == [CLAIM_RUN]
    assert client.hget(task_key(tid), "state") == "STARTED" and client.get(result_key) == meta
    client.delete(result_key)
    assert start("b") == [CLAIM_DUPLICATE]
    assert client.get(result_key) is None  # nothing stored for the lost claim


def test_unclaim_lua_gives_up_only_its_own_claim(client) -> None:
    tid, now = new_id(), time.time()
    run(client, "record", pending(tid).call())
    assert run(client, "claim", claim_call(tid, token="a", now=now)) == CLAIM_RUN
    assert run(client, "unclaim", unclaim_call(tid, "b")) == 0  # not b's to give up
    assert client.hget(task_key(tid), "claimed_by") == "a"
    assert run(client, "unclaim", unclaim_call(tid, "a")) == 1
    record = client.hgetall(task_key(tid))
    assert (record["claimed"], record["claimed_by"], record["deliveries"]) == ("0", "", "0")
    # The next delivery claims at once, without waiting for "a"'s claim to go stale.
    assert run(client, "claim", claim_call(tid, token="b", now=now + 1)) == CLAIM_RUN


def test_batch_done_lua_waits_for_the_seal_and_record_lua_counts_each_items_end_once(
    client,
) -> None:
    batch, now = new_id(), time.time()
    client.hset(batch_key(batch), mapping={"published": 2})
    items = [new_id(), new_id()]
    for tid in items:
        run(client, "record", pending(tid, batch_id=batch).call())
    assert client.zcard(index_key("batch_id", batch)) == 2
    assert client.hgetall(counts_key("batch_id", batch)) == {"PENDING": "2"}
    before = client.xlen(WEBHOOK_STREAM)

    def finish(tid: str, state: str = "SUCCESS") -> None:
        update = RecordUpdate(task_id=tid, state=state, attempt=0, ttl=TTL, now=now)
        run(client, "record", update.call())

    finish(items[0])
    finish(items[0], "FAILURE")  # a late write of a finished item counts nothing
    assert client.hget(batch_key(batch), "ended") == "1"
    finish(items[1])
    # Not sealed yet (run_batch may still publish): nothing announced.
    assert client.xlen(WEBHOOK_STREAM) == before
    assert run(client, "batch_done", ([batch_key(batch)], [batch, now])) == 0
    assert client.hgetall(counts_key("batch_id", batch)) == {"SUCCESS": "2"}


def test_prune_lua_leaves_no_counts_of_a_batch_or_owner_whose_tasks_all_went(client) -> None:
    """A batch's (and an owner's, a queue's) counts go with its last pruned task, also
    when every task changed state before (each left its first state's count at zero): one
    hash per batch would otherwise stay for ever. An item that ends after its batch's
    record expired does not make that record again (without an expiry, never announced)."""
    batch, now = new_id(), time.time()
    items = [new_id(), new_id()]
    client.hset(batch_key(batch), mapping={"published": 2})
    for tid in items:
        run(client, "record", pending(tid, batch_id=batch, owner="carol", queue="qc").call())
    client.delete(batch_key(batch))  # its record expired
    for tid in items:
        done = RecordUpdate(task_id=tid, state="SUCCESS", attempt=0, ttl=TTL, now=now)
        run(client, "record", done.call())
    assert not client.exists(batch_key(batch))
    client.zadd(EXPIRY_KEY, {tid: 0 for tid in items})
    assert run(client, "prune", prune_call(now, 10)) == 2
    for key in (counts_key("batch_id", batch), counts_key("owner", "carol"),
                counts_key("queue", "qc")):  # fmt: skip
        assert not client.exists(key), (key, client.hgetall(key))


def test_seal_batch_lua_announces_a_batch_whose_items_have_all_ended(client) -> None:
    batch, now = new_id(), time.time()
    client.hset(batch_key(batch), mapping={"published": 1, "ended": 0})
    assert run(client, "seal_batch", seal_batch_call(batch, now)) == 0  # one still runs
    client.hset(batch_key(batch), "ended", 1)
    before = client.xlen(WEBHOOK_STREAM)
    assert run(client, "batch_done", ([batch_key(batch)], [batch, now])) == 1
    assert run(client, "seal_batch", seal_batch_call(batch, now)) == 0  # once only
    [(_, entry)] = client.xrange(WEBHOOK_STREAM, "-", "+")[before:]
    assert entry == {"task_id": batch, "event": "batch_done", "seq": "0"}


def test_refresh_lua_renews_only_the_holders_claim(client) -> None:
    tid = new_id()
    client.hset(task_key(tid), mapping={"claimed_by": "a", "claimed_at": "1"})
    assert run(client, "refresh", refresh_call(tid, "b", 50)) == 0
    assert client.hget(task_key(tid), "claimed_at") == "1"
    assert run(client, "refresh", refresh_call(tid, "a", 50)) == 0
    assert client.hget(task_key(tid), "claimed_at") == "50"


def test_feed_lua_appends_chunks_and_progress_with_the_tasks_owner(client) -> None:
    tid, now = new_id(), time.time()
    run(client, "record", pending(tid).call())
    started = RecordUpdate(task_id=tid, state="STARTED", attempt=0, ttl=TTL)
    run(client, "record", started.call())
    first = run(client, "feed", feed_call("chunk", tid, {"text": "Hel"}, "Hel", now))
    second = run(client, "feed", feed_call("chunk", tid, {"text": "lo"}, "lo", now))
    assert [first[0], second[0]] == [0, 1]
    assert client.lrange(chunks_key(tid), 0, -1) == ["Hel", "lo"]
    assert 0 < client.ttl(chunks_key(tid)) <= CHUNKS_TTL
    index, event_id = run(client, "feed", feed_call("progress", tid, {"percent": 40.0}, "", now))
    assert index == -1
    assert json.loads(client.hget(task_key(tid), "progress")) == {"percent": 40.0}
    last = feed_events(client)[-1]
    assert client.xrange(FEED_STREAM)[-1][0] == event_id
    assert last == {
        "type": "progress", "task_id": tid, "state": "STARTED", "ts": pytest.approx(now),
        "owner": "alice", "name": "t", "queue": "q", "percent": 40.0, "seq": 5,
    }  # fmt: skip
    chunk_event = feed_events(client)[-2]
    assert (chunk_event["index"], chunk_event["text"]) == (1, "lo")
    # The task's event log: its states and these events, numbered in order.
    logged = [json.loads(e) for e in client.lrange(events_key(tid), 0, -1)]
    assert [(e["seq"], e["type"]) for e in logged] == [
        (1, "task"), (2, "task"), (3, "chunk"), (4, "chunk"), (5, "progress"),
    ]  # fmt: skip
    assert logged[-1] == last
    # A retried attempt restarts the output: the chunks go, the log says so.
    run(client, "feed", feed_call("chunks_reset", tid, None, "", now))
    assert not client.exists(chunks_key(tid))
    assert json.loads(client.lindex(events_key(tid), -1))["type"] == "chunks_reset"
    # Progress of a task without a record creates none.
    unknown = new_id()
    run(client, "feed", feed_call("progress", unknown, {"percent": 1.0}, "", now))
    assert not client.exists(task_key(unknown)) and not client.exists(events_key(unknown))


def test_prune_lua_removes_expired_records_with_every_index_count_and_chunk(client) -> None:
    old, young, now = new_id(), new_id(), time.time()
    for tid, at in ((old, now - 2 * TTL), (young, now)):
        stamped = RecordUpdate(
            task_id=tid, state="PENDING", attempt=0, ttl=TTL, now=at,
            fields={"name": "t", "queue": "q", "owner": "alice"},
        )  # fmt: skip
        run(client, "record", stamped.call())
        client.rpush(chunks_key(tid), "x")
    assert run(client, "prune", prune_call(now, 10)) == 1
    assert not client.exists(task_key(old), chunks_key(old))
    assert client.exists(task_key(young), chunks_key(young)) == 2
    for key in (index_key(), index_key("state", "PENDING"), index_key("owner", "alice"),
                index_key("queue", "q"), index_key("name", "t"),
                owner_state_key("alice", "PENDING"), EXPIRY_KEY):  # fmt: skip
        assert client.zscore(key, old) is None and client.zscore(key, young) is not None, key
    for key in (counts_key(), counts_key("owner", "alice"), counts_key("queue", "q")):
        assert client.hget(key, "PENDING") == "1", key
    assert run(client, "prune", prune_call(now, 10)) == 0


def test_record_lua_counts_housekeeping_apart_and_not_as_throughput(client) -> None:
    """A `check_task_health` (SYSTEM_TASKS) is counted in SYSTEM_COUNTS_KEY too (admins'
    default counts leave it out) and never in the finished-per-minute counter."""
    chore, work, now = new_id(), new_id(), time.time()
    for tid, name in ((chore, "check_task_health"), (work, "t")):
        run(client, "record", pending(tid, name=name, owner="").call())
        done = RecordUpdate(task_id=tid, state="SUCCESS", attempt=0, ttl=TTL, now=now)
        run(client, "record", done.call())
    assert client.hgetall(SYSTEM_COUNTS_KEY) == {"SUCCESS": "1"}
    assert client.hget(counts_key(), "SUCCESS") == "2"
    assert client.get(done_key(int(now // 60))) == "1"  # the user's task only
    client.zadd(EXPIRY_KEY, {chore: 0})
    assert run(client, "prune", prune_call(now, 10)) == 1
    assert client.hget(SYSTEM_COUNTS_KEY, "SUCCESS") is None  # a zero count is removed


def test_cancel_lua_marks_only_a_task_that_has_not_started(client) -> None:
    waiting, claimed, running, done = (new_id() for _ in range(4))
    for tid in (waiting, claimed, running, done):
        run(client, "record", pending(tid).call())
    client.hset(task_key(claimed), "claimed", "1")
    run(client, "record", RecordUpdate(task_id=running, state="STARTED", ttl=TTL).call())
    run(client, "record", RecordUpdate(task_id=done, state="FAILURE", ttl=TTL).call())

    outcomes = {tid: run(client, "cancel", cancel_call(tid)) for tid in (claimed, running, done)}
    assert outcomes == {claimed: "RUNNING", running: "RUNNING", done: "FAILURE"}
    assert run(client, "cancel", cancel_call(new_id())) == "MISSING"
    assert not any(client.hget(task_key(t), "cancel_requested") for t in outcomes)
    assert run(client, "cancel", cancel_call(waiting)) == "OK"
    assert client.hget(task_key(waiting), "cancel_requested") == "1"


def test_refuse_lua_cancels_a_record_that_exists_and_creates_none(client) -> None:
    reached, never = new_id(), new_id()
    run(client, "record", pending(reached).call())
    assert run(client, "refuse", refuse_call(reached)) == 1
    assert client.hget(task_key(reached), "cancel_requested") == "1"
    assert run(client, "refuse", refuse_call(never)) == 0
    assert not client.exists(task_key(never))


def test_link_retry_lua_links_once(client) -> None:
    tid = new_id()
    run(client, "record", pending(tid).call())
    assert run(client, "link_retry", link_retry_call(tid, "first")) == ""
    assert run(client, "link_retry", link_retry_call(tid, "second")) == "first"
    assert client.hget(task_key(tid), "retried_as") == "first"


def test_page_lua_reads_newest_first_below_the_bound_with_the_fields_asked(client) -> None:
    ids = [new_id() for _ in range(4)]
    for tid in ids:
        run(client, "record", pending(tid).call())
    client.delete(task_key(ids[2]))  # pruned while its index entry stayed
    flat = run(client, "page", page_call(index_key(), "+inf", 3, ("task_id", "state")))
    triples = [flat[i : i + 3] for i in range(0, len(flat), 3)]
    assert [t[0] for t in triples] == [ids[3], ids[2], ids[1]]
    assert triples[0][2] == [ids[3], "PENDING"] and triples[1][2] == [None, None]
    below = int(float(triples[1][1]))
    flat = run(client, "page", page_call(index_key(), f"({below}", 10, ("state",)))
    assert [flat[i] for i in range(0, len(flat), 3)] == [ids[1], ids[0]]


def test_status_lua_reads_the_record_and_the_meta_unless_the_task_failed(client) -> None:
    ok, failed = new_id(), new_id()
    for tid in (ok, failed):
        run(client, "record", pending(tid).call())
        client.set(f"meta-{tid}", "{}")
    run(client, "record", RecordUpdate(task_id=failed, state="FAILURE", ttl=TTL).call())
    record, meta = run(client, "status", status_call(ok, f"meta-{ok}"))
    assert dict(zip(record[::2], record[1::2], strict=True))["state"] == "PENDING"
    assert meta == "{}"
    record, meta = run(client, "status", status_call(failed, f"meta-{failed}"))
    assert record and meta is None
    assert run(client, "status", status_call(new_id(), "meta-none")) == [[], None]


def test_seq_counts_every_new_record_once(client) -> None:
    tid = new_id()
    for _ in range(3):
        run(client, "record", pending(tid).call())
    assert client.get(SEQ_KEY) == "1"
