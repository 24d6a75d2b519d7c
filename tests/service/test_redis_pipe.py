"""The gateway's auto-pipelined Redis connection (service/redis_pipe.py), against a real
Redis server of its own: batching, order, scripts, errors, restarts and stalls."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio
import redis.exceptions

from service.redis_pipe import RedisPipe, pipelinable
from tests.support.waiting import async_wait_until, wait_until
from workers.dev.embedded_redis import EmbeddedRedis


@pytest.fixture
def server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    embedded = EmbeddedRedis(tmp_path, appendonly=False).start()
    yield embedded
    embedded.stop()


@pytest.fixture
async def pipe(server: EmbeddedRedis) -> AsyncIterator[RedisPipe]:
    client = redis.asyncio.Redis(port=server.port, decode_responses=True)
    connection = RedisPipe(client, timeout=0.5)
    yield connection
    await connection.aclose()
    await client.aclose()


async def test_the_commands_of_one_turn_go_out_in_one_write_and_answer_in_order(
    pipe: RedisPipe,
) -> None:
    await pipe.execute("PING")  # connected
    protocol = pipe._protocol
    assert protocol is not None and protocol._transport is not None
    transport = protocol._transport
    writes: list[bytes] = []
    write = transport.write
    transport.write = lambda data: (writes.append(data), write(data))[1]  # type: ignore[method-assign]
    replies = await asyncio.gather(*(pipe.execute("INCRBY", "n", i) for i in range(1, 101)))
    assert replies == [i * (i + 1) // 2 for i in range(1, 101)]
    assert len(writes) == 1


async def test_a_script_is_loaded_again_when_the_server_lost_it(
    pipe: RedisPipe, server: EmbeddedRedis
) -> None:
    script = pipe.register_script("return {KEYS[1], ARGV[1], redis.call('INCR', KEYS[1])}")
    assert await script(keys=["k"], args=["a"]) == ["k", "a", 1]
    redis.Redis(port=server.port).script_flush()
    assert await script(keys=["k"], args=["b"]) == ["k", "b", 2]


async def test_reply_errors_are_raised_as_redis_py_raises_them(pipe: RedisPipe) -> None:
    await pipe.execute("SET", "text", "abc")
    with pytest.raises(redis.exceptions.ResponseError, match="not an integer"):
        await pipe.execute("INCR", "text")
    with pytest.raises(redis.exceptions.NoScriptError):
        await pipe.execute("EVALSHA", "0" * 40, 0)
    # An error answers its own caller only: the replies after it keep their order.
    errors, value = await asyncio.gather(
        pipe.execute("INCR", "text"), pipe.execute("GET", "text"), return_exceptions=True
    )
    assert isinstance(errors, redis.exceptions.ResponseError) and value == "abc"


async def test_a_cancelled_caller_leaves_the_next_reply_to_the_next_caller(
    pipe: RedisPipe,
) -> None:
    await pipe.execute("SET", "a", "1")
    await pipe.execute("SET", "b", "2")
    first = asyncio.ensure_future(pipe.execute("GET", "a"))
    await asyncio.sleep(0)  # its command is queued
    first.cancel()
    with pytest.raises(asyncio.CancelledError):  # cancelled while its reply was awaited
        await first
    assert await pipe.execute("GET", "b") == "2"


async def test_a_restarted_server_fails_the_calls_in_flight_and_the_next_call_reconnects(
    pipe: RedisPipe, server: EmbeddedRedis
) -> None:
    await pipe.execute("SET", "k", "v")
    server.stop()
    with pytest.raises(redis.exceptions.ConnectionError):
        await pipe.execute("GET", "k")
    with pytest.raises(redis.exceptions.ConnectionError):
        await pipe.execute("GET", "k")  # nothing listens: connecting fails alike
    server.start()
    assert await pipe.execute("SET", "k", "w") == "OK"
    assert await pipe.execute("GET", "k") == "w"


async def test_a_stalled_server_fails_its_callers_after_the_timeout(pipe: RedisPipe) -> None:
    await pipe.execute("PING")
    asleep = asyncio.ensure_future(pipe.execute("DEBUG", "SLEEP", "2"))
    started = time.monotonic()
    with pytest.raises(redis.exceptions.TimeoutError):
        await pipe.execute("PING")  # queued behind the sleep
    assert time.monotonic() - started < 1.5  # the 0.5 s timeout, checked every 0.5 s
    with pytest.raises(redis.exceptions.TimeoutError):
        await asleep
    # Once the server is awake again, the next call reconnects and is answered.
    await async_wait_until(_answers(pipe), timeout=10)


def _answers(pipe: RedisPipe) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        try:
            return await pipe.execute("PING") in (True, "PONG")
        except redis.exceptions.TimeoutError:
            return False

    return check


async def test_it_authenticates_and_selects_the_clients_database(server: EmbeddedRedis) -> None:
    admin = redis.Redis(port=server.port, decode_responses=True)
    admin.config_set("requirepass", "s3cret")
    admin = redis.Redis(port=server.port, password="s3cret", db=5, decode_responses=True)
    client = redis.asyncio.Redis(port=server.port, password="s3cret", db=5)
    connection = RedisPipe(client)
    try:
        await connection.execute("SET", "where", "db5")
        assert admin.get("where") == "db5"
    finally:
        await connection.aclose()
        await client.aclose()
        with contextlib.suppress(redis.exceptions.RedisError):
            admin.config_set("requirepass", "")
    wrong = redis.asyncio.Redis(port=server.port, password="wrong")
    refused = RedisPipe(wrong)
    with pytest.raises(redis.exceptions.AuthenticationError):
        await refused.execute("PING")
    await refused.aclose()
    await wrong.aclose()


def test_a_tls_connection_stays_with_redis_py() -> None:
    assert pipelinable(redis.asyncio.Redis.from_url("redis://127.0.0.1:6379/0"))
    assert pipelinable(redis.asyncio.Redis.from_url("unix:///tmp/redis.sock"))
    assert not pipelinable(redis.asyncio.Redis.from_url("rediss://127.0.0.1:6380/0"))


async def test_an_argument_redis_cannot_take_fails_its_caller_alone(pipe: RedisPipe) -> None:
    """A lone surrogate cannot be encoded: its caller fails before a reply is expected, so
    the replies of everyone after it stay theirs."""
    await pipe.execute("SET", "a", "alice's")
    await pipe.execute("SET", "b", "bob's")
    with pytest.raises(redis.exceptions.DataError):
        await pipe.execute("SET", "x", "\ud800")
    assert await asyncio.gather(pipe.execute("GET", "a"), pipe.execute("GET", "b")) == [
        "alice's",
        "bob's",
    ]


async def test_a_refused_login_leaves_no_connection_behind(server: EmbeddedRedis) -> None:
    admin = redis.Redis(port=server.port, decode_responses=True)
    admin.config_set("requirepass", "s3cret")
    admin = redis.Redis(port=server.port, password="s3cret", decode_responses=True)
    before = len(admin.client_list())
    wrong = redis.asyncio.Redis(port=server.port, password="wrong")
    refused = RedisPipe(wrong)
    for _ in range(20):
        with pytest.raises(redis.exceptions.AuthenticationError):
            await refused.execute("PING")
    await refused.aclose()
    await wrong.aclose()
    wait_until(lambda: len(admin.client_list()) <= before, timeout=5, what="connections closed")
    admin.config_set("requirepass", "")


async def test_a_server_out_of_connections_is_a_connection_error(server: EmbeddedRedis) -> None:
    """Redis says `max number of clients reached` and closes: 503 territory, as redis-py
    raises it, not a command's error."""
    admin = redis.Redis(port=server.port, decode_responses=True)
    admin.config_set("maxclients", "1")
    client = redis.asyncio.Redis(port=server.port, decode_responses=True)
    full = RedisPipe(client)
    try:
        results = await asyncio.gather(
            *(full.execute("PING") for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, redis.exceptions.ConnectionError) for r in results), results
    finally:
        admin.config_set("maxclients", "10000")
        await full.aclose()
        await client.aclose()


async def test_a_server_that_became_a_replica_is_left_for_a_new_connection(
    pipe: RedisPipe, server: EmbeddedRedis, tmp_path: Path
) -> None:
    """After a failover the old primary answers writes with READONLY: a connection error
    (503, and the next call asks again where the primary is), not a command's error."""
    primary = EmbeddedRedis(tmp_path / "primary", appendonly=False).start()
    try:
        await pipe.execute("SET", "k", "v")
        redis.Redis(port=server.port).replicaof("127.0.0.1", primary.port)
        with pytest.raises(redis.exceptions.ConnectionError, match="READONLY"):
            await pipe.execute("SET", "k", "w")
        assert pipe._protocol is not None and pipe._protocol.lost
    finally:
        redis.Redis(port=server.port).replicaof("NO", "ONE")
        primary.stop()
