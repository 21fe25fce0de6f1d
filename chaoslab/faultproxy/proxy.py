"""The TCP side of the fault proxy: one listener per link, each connection forwarded to the
link's upstream through the toxics active on it.

Semantics follow Toxiproxy's (github.com/Shopify/toxiproxy, README, "Toxics"): a toxic acts
on one stream of every connection it touches; toxics are added and removed while
connections are open, and act on them from then on; a disabled proxy (Toxiproxy's `down`)
closes its listener and every connection. One asyncio loop serves all of a lab's links.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from dataclasses import dataclass, field

from .toxics import DOWNSTREAM, UPSTREAM, Toxic

CHUNK = 32 * 1024
CONNECT_TIMEOUT_S = 5.0


@dataclass
class Address:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Address:
        host, _, port = str(text).rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError(f"{text!r}: expected host:port")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class Proxy:
    """A link: connections to ``listen`` go to ``upstream``."""

    name: str
    listen: Address
    upstream: Address
    enabled: bool = True
    toxics: dict[str, Toxic] = field(default_factory=dict)
    _server: asyncio.Server | None = None
    _connections: set[Connection] = field(default_factory=set)

    def to_json(self) -> dict:
        return {"name": self.name, "listen": str(self.listen), "upstream": str(self.upstream),
                "enabled": self.enabled, "toxics": [toxic.to_json() for toxic in self.toxics.values()]}

    async def start(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, self.listen.host, self.listen.port,
                                                      reuse_address=True)
            # Port 0 asks the system for one: report the one it gave.
            self.listen.port = self._server.sockets[0].getsockname()[1]
        self.enabled = True

    async def stop(self) -> None:
        """Toxiproxy's `down`: nothing listens, every open connection is closed."""
        self.enabled = False
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for connection in list(self._connections):
            connection.close()

    def add_toxic(self, toxic: Toxic) -> None:
        self.toxics[toxic.name] = toxic
        for connection in self._connections:
            connection.toxic_added(toxic)

    def remove_toxic(self, name: str) -> None:
        self.toxics.pop(name)
        for connection in self._connections:
            connection.toxic_removed(name)

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if not self.enabled:   # accepted just before `down`: closed like those it found open
            client_writer.close()
            return
        try:
            server_reader, server_writer = await asyncio.wait_for(
                asyncio.open_connection(self.upstream.host, self.upstream.port), CONNECT_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError):
            # As Toxiproxy does: the client sees its connection closed, as if the server refused.
            _reset(client_writer)
            return
        if not self.enabled:   # disabled while this connection was being set up: `down` closes it too
            client_writer.close()
            server_writer.close()
            return
        connection = Connection(self, client_reader, client_writer, server_reader, server_writer)
        self._connections.add(connection)
        try:
            await connection.run()
        finally:
            self._connections.discard(connection)


class Connection:
    """One client connection and its upstream one, pumped both ways through the toxics."""

    def __init__(self, proxy: Proxy, client_reader, client_writer, server_reader, server_writer) -> None:
        self.proxy = proxy
        self.writers = (client_writer, server_writer)
        self.pumps = {UPSTREAM: (client_reader, server_writer), DOWNSTREAM: (server_reader, client_writer)}
        # Whether each toxic touches this connection: drawn once, as Toxiproxy does.
        self._touched: dict[str, bool] = {}
        self._timers: dict[str, asyncio.Task] = {}
        self._sent = {UPSTREAM: 0, DOWNSTREAM: 0}
        self._closed = asyncio.Event()
        self._toxics_changed = asyncio.Event()

    # -- toxics that act on time, not on data ------------------------------------------------------
    def _active(self, stream: str) -> list[Toxic]:
        active = []
        for toxic in list(self.proxy.toxics.values()):
            if toxic.name not in self._touched:
                self._touched[toxic.name] = toxic.touches()
            if toxic.stream == stream and self._touched[toxic.name]:
                active.append(toxic)
        return active

    def toxic_added(self, toxic: Toxic) -> None:
        self._touched.pop(toxic.name, None)
        self._changed()
        if toxic.type in ("timeout", "reset_peer") and toxic in self._active(toxic.stream):
            if toxic.type == "reset_peer" or toxic.attributes["timeout"] > 0:
                self._timers[toxic.name] = asyncio.ensure_future(self._after(toxic))

    def toxic_removed(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()
        self._touched.pop(name, None)
        self._changed()

    def _changed(self) -> None:
        self._toxics_changed.set()
        self._toxics_changed = asyncio.Event()

    async def _while_held(self, stream: str) -> None:
        """Until no `timeout` toxic holds this stream. As in Toxiproxy, a timeout toxic stops the
        data, it does not drop it: what was sent waits (and then the sender, once the buffers are
        full, as in a partition that TCP rides out) and goes through once the toxic is removed."""
        while any(toxic.type == "timeout" for toxic in self._active(stream)):
            await self._toxics_changed.wait()

    async def _after(self, toxic: Toxic) -> None:
        await asyncio.sleep(toxic.attributes["timeout"] / 1000)
        if toxic.type == "reset_peer":
            self.close(reset=True)
        else:
            self.close()

    # -- the data ---------------------------------------------------------------------------------
    async def run(self) -> None:
        for toxic in list(self.proxy.toxics.values()):
            self.toxic_added(toxic)
        pumps = [asyncio.ensure_future(self._pump(stream)) for stream in self.pumps]
        try:
            await self._closed.wait()
        finally:
            for task in (*pumps, *self._timers.values()):
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)

    async def _pump(self, stream: str) -> None:
        """Reads as they come, each chunk stamped with when it may leave (latency), written in
        order by a second task, so that a delay adds to every chunk without serialising them."""
        reader, writer = self.pumps[stream]
        # Bounded, so that a held stream stops reading its source: back-pressure, not a buffer.
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(maxsize=8)
        sender = asyncio.ensure_future(self._send(stream, queue, writer))
        try:
            while True:
                await self._while_held(stream)
                try:
                    data = await reader.read(CHUNK)
                except OSError:
                    data = b""
                active = self._active(stream)
                delay = sum(toxic.delay_s() for toxic in active if toxic.type == "latency")
                await queue.put((time.monotonic() + delay, data))
                if not data:
                    break
            await sender
        finally:
            sender.cancel()

    async def _send(self, stream: str, queue: asyncio.Queue, writer: asyncio.StreamWriter) -> None:
        while True:
            leaves_at, data = await queue.get()
            wait = leaves_at - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            await self._while_held(stream)
            active = self._active(stream)
            if not data:   # the source closed: slow_close holds the close back
                delay = max((t.attributes["delay"] for t in active if t.type == "slow_close"), default=0)
                await asyncio.sleep(delay / 1000)
                self.close()
                return
            limit = min((t.attributes["bytes"] for t in active if t.type == "limit_data"), default=None)
            if limit is not None:
                data = data[:max(0, limit - self._sent[stream])]
            rate = min((t.attributes["rate"] for t in active if t.type == "bandwidth"), default=None)
            await self._write(writer, data, rate)
            self._sent[stream] += len(data)
            if limit is not None and self._sent[stream] >= limit:
                self.close()
                return

    async def _write(self, writer: asyncio.StreamWriter, data: bytes, rate_kbps: int | None) -> None:
        try:
            if rate_kbps is None:
                writer.write(data)
                await writer.drain()
                return
            # KB/s = bytes per ms: slices of 100 ms each keep the rate smooth.
            step = max(1, rate_kbps * 100)
            for start in range(0, len(data), step):
                piece = data[start:start + step]
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(len(piece) / (rate_kbps * 1000))
        except OSError:
            self.close()

    def close(self, reset: bool = False) -> None:
        for writer in self.writers:
            if reset:
                _reset(writer)
            elif not writer.is_closing():
                writer.close()
        self._closed.set()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), as a peer that crashed or a middlebox would."""
    sock = writer.get_extra_info("socket")
    try:
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    writer.transport.abort()
