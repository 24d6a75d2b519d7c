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
from tests.support.waiting import async_wait_until
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
