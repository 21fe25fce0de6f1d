"""The lean Redis client (service.redis_wire) against a small RESP server in the
test's own event loop: ordering of pipelined replies, deadlines, lost connections,
reconnection, the handshake, NOSCRIPT, and the pure-Python parser."""

from __future__ import annotations

import asyncio
import hashlib
import time

import pytest

from service.redis_wire import LeanRedis, PyReader, ReplyError, Script, pack_command, parse_redis_url


class FakeRedis:
    """Speaks enough RESP: GET/SET/PING/AUTH/SELECT/EVALSHA/EVAL; can go silent or hang up."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.silent = False
        self.commands: list[list[bytes]] = []
        self.connections = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.scripts: set[bytes] = set()
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.hang_up()
        self.server.close()
        await self.server.wait_closed()

    def hang_up(self) -> None:
        for writer in self.writers:
            writer.close()
        self.writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        parser = PyReader()
        try:
            while data := await reader.read(65536):
                parser.feed(data)
                while (command := parser.gets()) is not False:
                    self.commands.append(command)
                    if not self.silent:
                        writer.write(self._answer(command))
        except ConnectionError:
            pass

    def _answer(self, command: list[bytes]) -> bytes:
        name = command[0].upper()
        if name == b"PING":
            return b"+PONG\r\n"
        if name in (b"AUTH", b"SELECT"):
            return b"+OK\r\n"
        if name == b"GET":
            value = self.data.get(command[1])
            return b"$-1\r\n" if value is None else b"$%d\r\n%s\r\n" % (len(value), value)
        if name == b"SET":
            self.data[command[1]] = command[2]
            return b"+OK\r\n"
        if name == b"EVALSHA":
            if command[1] not in self.scripts:
                return b"-NOSCRIPT No matching script. Please use EVAL.\r\n"
            return b"*2\r\n:1\r\n$2\r\nok\r\n"
        if name == b"EVAL":
            self.scripts.add(hashlib.sha1(command[1]).hexdigest().encode())
            return b"*2\r\n:1\r\n$2\r\nok\r\n"
        if name == b"GARBAGE":
            return b"?not resp\r\n"
        return b"-ERR unknown command\r\n"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


async def _with_server(test, *, credentials: str = "", database: str = "", timeout: float = 0.2):
    fake = FakeRedis()
    port = await fake.start()
    client = LeanRedis(f"redis://{credentials}127.0.0.1:{port}{database}", timeout=timeout, connect_timeout=timeout)
    try:
        return await test(fake, client)
    finally:
        await client.close()
        await fake.stop()


@pytest.fixture(params=["hiredis", "python"])
def parser(request, monkeypatch):
    """Both reply parsers: hiredis when installed, and the pure-Python fallback."""
    import service.redis_wire as wire

    if request.param == "python":
        monkeypatch.setattr(wire, "hiredis", None)
    elif wire.hiredis is None:
        pytest.skip("hiredis is not installed")
    return request.param


def test_concurrent_commands_share_one_connection_and_get_their_own_replies(parser):
    async def test(fake, client):
        fake.data = {f"k{i}".encode(): f"v{i}".encode() for i in range(200)}
        replies = await asyncio.gather(*(client.execute("GET", f"k{i}") for i in range(200)))
        assert replies == [f"v{i}".encode() for i in range(200)]
        assert await client.execute("GET", "missing") is None
        assert fake.connections == 1

    run(_with_server(test))


def test_a_silent_server_times_out_within_the_deadline_then_the_client_reconnects():
    async def test(fake, client):
        assert await client.execute("PING") == b"PONG"
        fake.silent = True
        started = time.monotonic()
        results = await asyncio.gather(client.execute("PING"), client.execute("GET", "x"), return_exceptions=True)
        elapsed = time.monotonic() - started
        assert all(isinstance(r, TimeoutError) for r in results), results
        assert 0.15 <= elapsed < 0.6
        fake.silent = False
        assert await client.execute("PING") == b"PONG"
        assert fake.connections == 2, "a timed-out connection must not be reused"

    run(_with_server(test))


def test_a_lost_connection_fails_its_commands_and_the_next_one_reconnects():
    async def test(fake, client):
        assert await client.execute("PING") == b"PONG"
        fake.silent = True
        waiting = asyncio.ensure_future(client.execute("PING"))
        await asyncio.sleep(0.02)
        fake.hang_up()
        with pytest.raises(ConnectionError):
            await waiting
        fake.silent = False
        assert await client.execute("PING") == b"PONG"
        assert fake.connections == 2

    run(_with_server(test, timeout=5))


def test_a_refused_connection_is_an_os_error():
    async def test():
        fake = FakeRedis()
        port = await fake.start()
        await fake.stop()  # nothing listens on that port any more
        client = LeanRedis(f"redis://127.0.0.1:{port}/0", timeout=0.2, connect_timeout=0.2)
        with pytest.raises(OSError):
            await client.execute("PING")
        await client.close()

    run(test())


def test_an_error_reply_raises_and_leaves_the_connection_usable(parser):
    async def test(fake, client):
        with pytest.raises(ReplyError, match="unknown command"):
            await client.execute("NOPE")
        assert await client.execute("PING") == b"PONG"
        assert fake.connections == 1

    run(_with_server(test))


def test_an_unreadable_reply_drops_the_connection_and_the_next_command_reconnects(parser):
    async def test(fake, client):
        with pytest.raises(ConnectionError, match="unreadable"):
            await client.execute("GARBAGE")
        assert await client.execute("PING") == b"PONG"
        assert fake.connections == 2

    run(_with_server(test))


def test_a_cancelled_command_does_not_shift_the_replies_of_the_next_ones():
    async def test(fake, client):
        fake.data = {b"a": b"1", b"b": b"2"}
        assert await client.execute("PING") == b"PONG"
        first = asyncio.ensure_future(client.execute("GET", "a"))
        await asyncio.sleep(0)
        first.cancel()
        assert await client.execute("GET", "b") == b"2"

    run(_with_server(test))


def test_scripts_run_by_sha_and_are_loaded_on_noscript():
    async def test(fake, client):
        script = Script("return {1, 'ok'}")
        assert await client.run_script(script, ["k"], ["a"]) == [1, b"ok"]
        assert await client.run_script(script, ["k"], ["a"]) == [1, b"ok"]
        names = [c[0] for c in fake.commands]
        assert names == [b"EVALSHA", b"EVAL", b"EVALSHA"]

    run(_with_server(test))


def test_password_and_database_are_sent_first_on_each_connection():
    async def test(fake, client):
        assert await client.execute("PING") == b"PONG"
        assert fake.commands[:3] == [[b"AUTH", b"s3cret"], [b"SELECT", b"3"], [b"PING"]]

    run(_with_server(test, credentials=":s3cret@", database="/3"))


def test_redis_urls():
    assert parse_redis_url("redis://127.0.0.1:6380/2") == ("127.0.0.1", 6380, 2, None, None)
    assert parse_redis_url("redis://u:p%40ss@h") == ("h", 6379, 0, "u", "p@ss")
    with pytest.raises(ValueError):
        parse_redis_url("rediss://h:1/0")


def test_commands_are_packed_as_resp_arrays_of_bulk_strings():
    assert pack_command(("SET", "k", b"v", 10, 1.5)) == b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n$2\r\n10\r\n$3\r\n1.5\r\n"
    with pytest.raises(TypeError):
        pack_command(("SET", "k", True))


def test_the_python_reader_parses_every_reply_type_fed_a_byte_at_a_time():
    stream = b"+OK\r\n-ERR bad\r\n:42\r\n$3\r\nabc\r\n$-1\r\n*3\r\n:1\r\n$0\r\n\r\n*1\r\n$-1\r\n*-1\r\n"
    reader = PyReader()
    replies = []
    for byte in stream:
        reader.feed(bytes([byte]))
        while (reply := reader.gets()) is not False:
            replies.append(reply)
    assert replies[0] == b"OK"
    assert isinstance(replies[1], ReplyError) and str(replies[1]) == "ERR bad"
    assert replies[2:] == [42, b"abc", None, [1, b"", [None]], None]
