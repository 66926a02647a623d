"""Real peers for the ambassador tests: redis-server processes, in-process TCP backends, a RESP client.

The ambassador runs in production on uvloop, so these tests do too.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from tests.ports import free_port
from tests.proxying import ambassador_factory, ask  # noqa: F401 - shared with tests/faults
from tests.tooling import require_tool
from waypost.ambassador.routes import Ambassador
from waypost.eventloop import new_event_loop


def pytest_asyncio_loop_factories(config, item):  # type: ignore[no-untyped-def]
    """Run this directory's async tests on uvloop (waypost's Loop), the loop the ambassador uses in production.

    ``WAYPOST_TEST_LOOP=asyncio`` runs them on the stdlib loop instead (what a host without uvloop gets).
    """
    if os.environ.get("WAYPOST_TEST_LOOP") == "asyncio":
        return {"asyncio": asyncio.new_event_loop}
    return {"uvloop": new_event_loop}


# ---- redis --------------------------------------------------------------------------------------


class RedisProc:
    """One redis-server on a free loopback port (no persistence)."""

    def __init__(self, binary: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--protected-mode", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.02)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def redis_factory():
    binary = require_tool("redis-server", "redis-server")
    procs: list[RedisProc] = []

    def make() -> RedisProc:
        proc = RedisProc(binary)
        procs.append(proc)
        return proc

    yield make
    for p in procs:
        p.kill()


class Resp:
    """A minimal RESP2 client over asyncio streams (enough for SET/GET/INCR/INFO/PING)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1") -> Resp:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 24)
        return cls(reader, writer)

    @staticmethod
    def encode(*args: bytes | str | int) -> bytes:
        parts = [f"*{len(args)}\r\n".encode()]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
        return b"".join(parts)

    async def read_reply(self) -> object:
        line = await self.reader.readuntil(b"\r\n")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = await self.reader.readexactly(n + 2)
            return data[:-2]
        if kind == b"*":
            return [await self.read_reply() for _ in range(int(rest))]
        raise RuntimeError(f"bad RESP line {line!r}")

    async def call(self, *args: bytes | str | int) -> object:
        self.writer.write(self.encode(*args))
        return await self.read_reply()

    async def server_port(self) -> int:
        info = await self.call("INFO", "server")
        for line in info.decode().splitlines():  # type: ignore[union-attr]
            if line.startswith("tcp_port:"):
                return int(line.split(":")[1])
        raise RuntimeError("no tcp_port in INFO")

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


# ---- in-process backends ------------------------------------------------------------------------


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Backend:
    """An asyncio TCP server on a free loopback port running `handler` per connection."""

    def __init__(self, handler: Handler, name: str = "") -> None:
        self.handler = handler
        self.name = name
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.connections = 0
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> Backend:
        async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            self.writers.add(writer)
            try:
                await self.handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                self.writers.discard(writer)
                writer.close()

        self.server = await asyncio.start_server(wrapped, "127.0.0.1", 0, limit=1 << 20, backlog=2048)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def endpoint(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    async def stop(self, reset_open: bool = False) -> None:
        if self.server is not None:
            self.server.close()
            for w in list(self.writers):
                if reset_open:
                    w.transport.abort()
                else:
                    w.close()
            await self.server.wait_closed()
            self.server = None


def named_echo(name: str) -> Handler:
    """Line protocol: answers each line with `name:line`."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            writer.write(name.encode() + b":" + line)
            await writer.drain()

    return handler


@pytest.fixture
async def backends() -> AsyncIterator[Callable[..., Awaitable[Backend]]]:
    made: list[Backend] = []

    async def make(handler: Handler | None = None, name: str = "") -> Backend:
        b = await Backend(handler or named_echo(name or f"b{len(made)}"), name or f"b{len(made)}").start()
        made.append(b)
        return b

    yield make
    for b in made:
        await b.stop()


def port_of(amb: Ambassador, index: int = 0) -> int:
    return amb.routes[index].listen_address[1]
