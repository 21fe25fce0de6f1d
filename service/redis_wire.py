"""A lean Redis client for the request path: one multiplexed connection.

Why not redis-py here: its asyncio client spends tens of microseconds of Python
per command (pool checkout and release, the retry wrapper, argument packing, one
stream reader per connection), more than the rest of a cached GET together (see
the README's benchmark notes). Redis answers the commands of one connection in
order, so a single connection can carry every request's commands at once: the
commands issued in one event-loop turn leave in one write, and the replies are
parsed by hiredis (by a small pure-Python parser if hiredis is absent) and handed
to the waiting futures in order.

Failure model, as the cache's circuit breaker expects it: every command has a
deadline (``timeout``). If the oldest unanswered command passes it, the
connection is aborted and every command waiting on it fails with TimeoutError: a
paused Redis accepts TCP and never answers, and a half-open connection never
would either. A lost connection fails its waiters with ConnectionError. The next
command opens a new connection. No retries: the breaker decides when to try again.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

try:
    import hiredis
except ImportError:  # the pure-Python parser below does the same, more slowly
    hiredis = None


class ReplyError(Exception):
    """Redis answered with an error reply (``-ERR ...``, ``-NOSCRIPT ...``)."""


class ProtocolError(ConnectionError):
    """Bytes that are not RESP, or a reply nobody asked for: the connection is unusable."""


Arg = bytes | str | int | float


def pack_command(args: Sequence[Arg]) -> bytes:
    """One command in RESP: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif not isinstance(arg, bytes):
            if isinstance(arg, bool):
                raise TypeError("booleans are not Redis arguments; pass 0/1 or a string")
            arg = repr(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


class Script:
    """A Lua script, run by its SHA1 and loaded on first use (EVALSHA, then EVAL on NOSCRIPT)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


class _Incomplete(Exception):
    pass


class PyReader:
    """RESP2 replies from a byte stream, with hiredis' Reader interface: ``feed``, then
    ``gets`` until it returns False. Error replies are returned as ReplyError."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def gets(self) -> Any:
        try:
            reply, self._pos = self._parse(self._pos)
        except _Incomplete:
            return False
        if self._pos == len(self._buffer) or self._pos > 65536:
            del self._buffer[: self._pos]
            self._pos = 0
        return reply

    def _parse(self, pos: int) -> tuple[Any, int]:
        buffer = self._buffer
        end = buffer.find(b"\r\n", pos)
        if end < 0:
            raise _Incomplete()
        kind, line, pos = buffer[pos], bytes(buffer[pos + 1 : end]), end + 2
        if kind == 0x2B:  # +
            return line, pos
        if kind == 0x2D:  # -
            return ReplyError(line.decode("utf-8", "replace")), pos
        if kind == 0x3A:  # :
            return int(line), pos
        if kind == 0x24:  # $
            size = int(line)
            if size < 0:
                return None, pos
            if len(buffer) < pos + size + 2:
                raise _Incomplete()
            return bytes(buffer[pos : pos + size]), pos + size + 2
        if kind == 0x2A:  # *
            count = int(line)
            if count < 0:
                return None, pos
            items = []
            for _ in range(count):
                item, pos = self._parse(pos)
                items.append(item)
            return items, pos
        raise ProtocolError(f"unexpected RESP type byte {kind!r}")


def _new_reader():
    if hiredis is not None:
        return hiredis.Reader(replyError=ReplyError, protocolError=ProtocolError)
    return PyReader()


class _Connection(asyncio.Protocol):
    """One TCP connection: a FIFO of waiting futures matched to replies in order.

    Once failed (lost, timed out, unparsable) it is never used again.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self._loop = loop
        self._timeout = timeout
        self._reader = _new_reader()
        # (future, deadline) per command sent and not yet answered. A cancelled
        # future keeps its place: its reply still comes, in order, and is dropped.
        self._waiting: deque[tuple[asyncio.Future, float]] = deque()
        self._outgoing: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.failed = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        waiting = self._waiting
        try:
            reader.feed(data)
            while (reply := reader.gets()) is not False:
                if not waiting:
                    raise ProtocolError("a reply that no command asked for")
                future, _ = waiting.popleft()
                if future.done():
                    continue
                if isinstance(reply, ReplyError):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
        except Exception as exc:  # a parser error: nothing after it can be trusted
            reason = type(exc).__name__
            self.fail(lambda: ProtocolError(f"redis sent an unreadable reply ({reason})"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(lambda: ConnectionError("redis connection lost"))

    # commands

    def send(self, payload: bytes) -> asyncio.Future:
        future = self._loop.create_future()
        if self.failed:
            future.set_exception(ConnectionError("redis connection closed"))
            return future
        deadline = self._loop.time() + self._timeout
        self._waiting.append((future, deadline))
        if not self._outgoing:
            # Everything sent in this turn of the loop leaves in one write.
            self._loop.call_soon(self._flush)
        self._outgoing.append(payload)
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._check_deadline)
        return future

    def _flush(self) -> None:
        if self.failed or not self._outgoing:
            return
        data = b"".join(self._outgoing)
        self._outgoing.clear()
        self._transport.write(data)

    def _check_deadline(self) -> None:
        self._timer = None
        if self.failed or not self._waiting:
            return
        _, deadline = self._waiting[0]
        if deadline <= self._loop.time():
            timeout = self._timeout
            self.fail(lambda: TimeoutError(f"redis did not answer within {timeout:g} s"))
            return
        self._timer = self._loop.call_at(deadline, self._check_deadline)

    def fail(self, error: Callable[[], BaseException]) -> None:
        """Give up on this connection: every waiting command gets its own ``error()``."""
        if self.failed:
            return
        self.failed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._outgoing.clear()
        while self._waiting:
            future, _ = self._waiting.popleft()
            if not future.done():
                future.set_exception(error())
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        self.fail(lambda: ConnectionError("redis client closed"))


class LeanRedis:
    """The client: ``await execute("GET", key)``; one connection, opened on first use."""

    def __init__(self, url: str, *, timeout: float, connect_timeout: float) -> None:
        self.host, self.port, self.db, self._username, self._password = parse_redis_url(url)
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._connection: _Connection | None = None
        self._connecting: asyncio.Task | None = None
        self._closed = False

    def execute(self, *args: Arg) -> Awaitable[Any]:
        """The reply, to await. Connected, this is the reply's future itself: no
        coroutine is made per command on the hot path."""
        connection = self._connection
        if connection is None or connection.failed:
            return self._execute_after_connecting(args)
        return connection.send(pack_command(args))

    async def _execute_after_connecting(self, args: Sequence[Arg]) -> Any:
        connection = await self._connect()
        return await connection.send(pack_command(args))

    async def execute_many(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """Several commands pipelined (they leave in one write); the first error is raised."""
        connection = self._connection
        if connection is None or connection.failed:
            connection = await self._connect()
        futures = [connection.send(pack_command(args)) for args in commands]
        return list(await asyncio.gather(*futures))

    async def run_script(self, script: Script, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except ReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            return await self.execute("EVAL", script.source, len(keys), *keys, *args)

    async def close(self) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        if self._connection is not None:
            self._connection.close()

    async def _connect(self) -> _Connection:
        # Concurrent callers share one attempt, and its failure.
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
            self._connecting.add_done_callback(self._connect_done)
        return await asyncio.shield(self._connecting)

    def _connect_done(self, task: asyncio.Task) -> None:
        self._connecting = None
        if not task.cancelled():
            task.exception()  # retrieved here, so a failure nobody awaited is not logged as lost

    async def _open(self) -> _Connection:
        if self._closed:
            raise ConnectionError("redis client closed")
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._connect_timeout):
            _, connection = await loop.create_connection(
                lambda: _Connection(loop, self._timeout), self.host, self.port
            )
        handshake = []
        if self._password is not None:
            auth = ("AUTH", self._username, self._password) if self._username else ("AUTH", self._password)
            handshake.append(connection.send(pack_command(auth)))
        if self.db:
            handshake.append(connection.send(pack_command(("SELECT", self.db))))
        try:
            for reply in handshake:
                await reply
        except BaseException:
            connection.close()
            raise
        self._connection = connection
        return connection


def parse_redis_url(url: str) -> tuple[str, int, int, str | None, str | None]:
    """``redis://[[user]:password@]host[:port][/db]`` → (host, port, db, user, password)."""
    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise ValueError(f"REDIS_URL: only redis:// URLs are supported by the lean client, not {parts.scheme!r}://")
    path = parts.path.strip("/")
    try:
        db = int(path) if path else 0
        port = parts.port or 6379
    except ValueError:
        raise ValueError("REDIS_URL: the port and the database must be integers") from None
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    return parts.hostname or "127.0.0.1", port, db, username, password
