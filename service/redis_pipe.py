"""One auto-pipelined Redis connection for the gateway's hot paths.

redis-py's asyncio client takes a pooled connection, writes one command and awaits its
reply for every call: about 130 us of Python per call, which capped a handler reading
Redis once at 0.35x of one answering from memory (bench/README.md). Here every command
issued in one turn of the event loop goes out in one write on one connection, and the
replies, parsed by hiredis (redis-py's own parser), resolve the callers' futures in
order: 32 concurrent requests cost one write and one read, and a call about 15 us.

It speaks to the server redis-py's client would (the same URL; under Sentinel, the
primary the sentinels name when it connects), raises redis-py's exceptions, and only
carries short commands: blocking reads and pub/sub stay on redis-py's client, since one
slow reply here would hold every reply behind it.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import socket
import time
from collections.abc import Sequence
from typing import Any

import hiredis
import redis.asyncio
import redis.asyncio.sentinel
import redis.exceptions

CHECK_INTERVAL = 0.5


class RedisPipe:
    """Commands go to the server of `client` (a redis-py asyncio client, whose connection
    settings it reuses) over one connection of its own."""

    def __init__(self, client: redis.asyncio.Redis, timeout: float | None = None) -> None:
        """`timeout`: seconds a reply may take (default: the client's `socket_timeout`, else 5)."""
        self._pool = client.connection_pool
        self._timeout = timeout or self._pool.connection_kwargs.get("socket_timeout") or 5.0
        self._protocol: _PipeProtocol | None = None
        self._connecting: asyncio.Future[_PipeProtocol] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._closed = False

    async def execute(self, *args: Any, retry: bool = False) -> Any:
        """The command's reply. `retry`: a command safe to run twice (a read) is sent once
        more on a new connection when the first one was lost, as redis-py retries."""
        try:
            return await self._call(args)
        except redis.exceptions.ConnectionError:
            if not retry or self._closed:
                raise
            return await self._call(args)

    async def _call(self, args: tuple[Any, ...]) -> Any:
        protocol = self._protocol
        if protocol is None or protocol.lost:
            protocol = await self._connect()
        return await protocol.call(args)

    def register_script(self, source: str, *, retry: bool = False) -> PipeScript:
        """`retry`: the script only reads (see `execute`)."""
        return PipeScript(self, source, retry=retry)

    async def aclose(self) -> None:
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._protocol is not None:
            self._protocol.abort(redis.exceptions.ConnectionError("connection closed"))

    async def _connect(self) -> _PipeProtocol:
        if self._closed:
            raise redis.exceptions.ConnectionError("connection closed")
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
            self._connecting.add_done_callback(self._connected)
        return await asyncio.shield(self._connecting)

    def _connected(self, attempt: asyncio.Future[_PipeProtocol]) -> None:
        self._connecting = None
        if attempt.cancelled() or attempt.exception() is not None:
            return  # the callers awaiting it were told
        if self._closed:  # closed while connecting
            attempt.result().abort(redis.exceptions.ConnectionError("connection closed"))
            return
        self._protocol = attempt.result()
        if self._watchdog is None:
            self._check()

    async def _open(self) -> _PipeProtocol:
        kwargs = self._pool.connection_kwargs
        loop = asyncio.get_running_loop()
        protocol: _PipeProtocol | None = None
        try:
            async with asyncio.timeout(kwargs.get("socket_connect_timeout") or self._timeout):
                if isinstance(self._pool, redis.asyncio.sentinel.SentinelConnectionPool):
                    host, port = await self._pool.get_master_address()
                    connection = loop.create_connection(_PipeProtocol, host, port)
                elif kwargs.get("path"):
                    connection = loop.create_unix_connection(_PipeProtocol, kwargs["path"])
                else:
                    connection = loop.create_connection(
                        _PipeProtocol, kwargs.get("host", "localhost"), kwargs.get("port", 6379)
                    )
                _, protocol = await connection
                protocol.keep_alive()
                hello: list[Any] = []
                if kwargs.get("password"):
                    user = kwargs.get("username")
                    hello.append(protocol.call(
                        ("AUTH", user, kwargs["password"]) if user else ("AUTH", kwargs["password"])
                    ))  # fmt: skip
                if kwargs.get("db"):
                    hello.append(protocol.call(("SELECT", kwargs["db"])))
                await asyncio.gather(*hello)
        except BaseException as exc:
            if protocol is not None:  # connected, but refused (AUTH, SELECT) or too slow
                protocol.abort(redis.exceptions.ConnectionError("connection not set up"))
            if isinstance(exc, OSError | TimeoutError):
                raise redis.exceptions.ConnectionError(f"connecting to Redis: {exc}") from exc
            if isinstance(exc, redis.exceptions.ResponseError):
                raise redis.exceptions.AuthenticationError(str(exc)) from exc
            raise
        return protocol

    def _check(self) -> None:
        """A reply later than the timeout means a server that no longer answers (a
        partition, a stopped process): every caller is failed, and the next call
        reconnects."""
        protocol = self._protocol
        if protocol is not None and not protocol.lost:
            oldest = protocol.oldest()
            if oldest is not None and time.monotonic() - oldest > self._timeout:
                protocol.abort(redis.exceptions.TimeoutError("Timeout reading from Redis"))
        if not self._closed:
            loop = asyncio.get_running_loop()
            self._watchdog = loop.call_later(CHECK_INTERVAL, self._check)


class PipeScript:
    """A Lua script called as redis-py's `Script` is: EVALSHA, loaded on NOSCRIPT."""

    def __init__(self, pipe: RedisPipe, source: str, *, retry: bool = False) -> None:
        self.pipe = pipe
        self.source = source
        self.retry = retry
        self.sha = hashlib.sha1(
            source.encode(), usedforsecurity=False
        ).hexdigest()  # Redis names scripts so

    async def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        call = ("EVALSHA", self.sha, len(keys), *keys, *args)
        try:
            return await self.pipe.execute(*call, retry=self.retry)
        except redis.exceptions.NoScriptError:
            await self.pipe.execute("SCRIPT", "LOAD", self.source, retry=True)
            return await self.pipe.execute(*call, retry=self.retry)


class _PipeProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self._reader = hiredis.Reader(encoding="utf-8", replyError=redis.exceptions.ResponseError)
        self._waiters: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self._out: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def call(self, args: Sequence[Any]) -> asyncio.Future[Any]:
        if self.lost:
            raise redis.exceptions.ConnectionError("connection to Redis lost")
        # Packed first: an argument hiredis cannot encode (a lone surrogate) fails its own
        # caller here, before a reply is expected for it.
        try:
            packed = hiredis.pack_command(tuple(args))
        except (TypeError, UnicodeError) as exc:
            raise redis.exceptions.DataError(f"an argument Redis cannot take: {exc}") from exc
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._waiters.append((future, time.monotonic()))
        if not self._out:
            loop.call_soon(self._flush)
        self._out.append(packed)
        return future

    def keep_alive(self) -> None:
        """TCP keepalive, as redis-py sets it: a peer gone without a word is noticed."""
        sock = self._transport.get_extra_info("socket") if self._transport else None
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def _flush(self) -> None:
        if self._out and self._transport is not None and not self.lost:
            self._transport.write(b"".join(self._out))
        self._out.clear()

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        waiters = self._waiters
        while (reply := self._reader.gets()) is not False:
            if not waiters:
                # A reply nobody asked for (the server's own error before closing, such as
                # 'max number of clients reached'): the connection is not to be trusted.
                self.abort(redis.exceptions.ConnectionError(f"Redis said: {reply}"))
                return
            future, _ = waiters.popleft()
            if future.done():  # its caller was cancelled; the reply is dropped in order
                continue
            if isinstance(reply, redis.exceptions.ResponseError):
                if str(reply).startswith("READONLY"):
                    # A primary demoted by a failover: ask the sentinels again.
                    self.abort(redis.exceptions.ConnectionError(f"Redis is a replica now: {reply}"))
                    future.set_exception(redis.exceptions.ConnectionError(str(reply)))
                    return
                future.set_exception(_specific(reply))
            else:
                future.set_result(reply)

    def oldest(self) -> float | None:
        return self._waiters[0][1] if self._waiters else None

    def abort(self, exc: Exception) -> None:
        self._fail(exc)
        if self._transport is not None:
            self._transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(redis.exceptions.ConnectionError(f"connection to Redis lost: {exc or 'closed'}"))

    def _fail(self, exc: Exception) -> None:
        self.lost = True
        self._out.clear()
        while self._waiters:
            future, _ = self._waiters.popleft()
            if not future.done():
                future.set_exception(exc)


# Reply errors redis-py raises as their own classes, by the reply's first word.
SPECIFIC_ERRORS: dict[str, type[redis.exceptions.RedisError]] = {
    "NOSCRIPT": redis.exceptions.NoScriptError,
    "LOADING": redis.exceptions.BusyLoadingError,
    "NOAUTH": redis.exceptions.AuthenticationError,
    "EXECABORT": redis.exceptions.ExecAbortError,
}
# Reply errors that mean the connection, not the command, failed (redis-py: 503 territory).
CONNECTION_ERRORS = ("ERR max number of clients reached",)


def _specific(error: redis.exceptions.ResponseError) -> redis.exceptions.RedisError:
    if str(error).startswith(CONNECTION_ERRORS):
        return redis.exceptions.ConnectionError(str(error))
    code, _, message = str(error).partition(" ")
    known = SPECIFIC_ERRORS.get(code)
    return known(message) if known is not None else error


def pipelinable(client: redis.asyncio.Redis) -> bool:
    """Whether a pipe can stand in for `client`: a TCP or Unix connection, plain or found
    through Sentinel. TLS (`rediss://`) stays with redis-py, whose TLS options (client
    certificates, revocation, hostname checks) this module does not repeat."""
    return not issubclass(client.connection_pool.connection_class, redis.asyncio.SSLConnection)
