"""The byte pipe through a real ambassador: redis protocol, checksummed bulk data, half-close, resets."""

from __future__ import annotations

import asyncio
import hashlib
import random
import socket
import struct

import pytest

from tests.ambassador.conftest import Resp, ask, port_of
from tests.tooling import require_tool


async def test_redis_protocol_through_a_static_route(redis_factory, ambassador_factory):
    redis = redis_factory()
    amb = await ambassador_factory([f"127.0.0.1:0=127.0.0.1:{redis.port}"])
    client = await Resp.connect(port_of(amb))
    try:
        assert await client.call("PING") == "PONG"
        assert await client.call("SET", "k", "v") == "OK"
        assert await client.call("GET", "k") == b"v"
        big = random.randbytes(3 << 20)
        assert await client.call("SET", "big", big) == "OK"
        assert await client.call("GET", "big") == big
        # a pipeline of 2,000 commands in one write: replies in order, nothing lost
        client.writer.write(b"".join(Resp.encode("INCR", "n") for _ in range(2000)))
        assert [await client.read_reply() for _ in range(2000)] == list(range(1, 2001))
        assert await client.server_port() == redis.port
    finally:
        await client.close()


async def test_redis_cli_through_the_ambassador(redis_factory, ambassador_factory):
    cli = require_tool("redis-cli", "redis-tools")
    redis = redis_factory()
    amb = await ambassador_factory([f"127.0.0.1:0=127.0.0.1:{redis.port}"])
    port = str(port_of(amb))
    for args, expected in ((["SET", "greeting", "hello"], b"OK"), (["GET", "greeting"], b"hello")):
        proc = await asyncio.create_subprocess_exec(cli, "-h", "127.0.0.1", "-p", port, *args,
                                                    stdout=asyncio.subprocess.PIPE)
        out, _ = await asyncio.wait_for(proc.communicate(), 10)
        assert out.strip() == expected


async def _hash_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reads `seed, size` then everything to EOF; answers sha256(upload) then `size` seeded bytes."""
    seed, size = struct.unpack("!QQ", await reader.readexactly(16))
    digest = hashlib.sha256()
    while chunk := await reader.read(1 << 20):
        digest.update(chunk)
    writer.write(digest.digest())
    rng = random.Random(seed)
    left = size
    while left:
        n = min(left, 1 << 20)
        writer.write(rng.randbytes(n))
        left -= n
        await writer.drain()
    writer.write_eof()
    await writer.drain()


async def _transfer(port: int, seed: int, up: int, down: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(struct.pack("!QQ", seed, down))
        rng = random.Random(seed ^ 0xABCDEF)
        sent = hashlib.sha256()
        left = up
        while left:
            chunk = rng.randbytes(min(left, 1 << 20))
            sent.update(chunk)
            writer.write(chunk)
            left -= len(chunk)
            await writer.drain()
        writer.write_eof()  # half-close: the server answers after seeing our EOF
        assert await reader.readexactly(32) == sent.digest()
        expect = random.Random(seed)
        got = 0
        received = hashlib.sha256()
        wanted = hashlib.sha256()
        while chunk := await reader.read(1 << 20):
            received.update(chunk)
            wanted.update(expect.randbytes(len(chunk)))
            got += len(chunk)
        assert got == down
        assert received.digest() == wanted.digest()
    finally:
        writer.close()


async def test_checksummed_bulk_both_ways_with_half_close(backends, ambassador_factory):
    server = await backends(_hash_server)
    amb = await ambassador_factory([f"127.0.0.1:0=127.0.0.1:{server.port}"])
    port = port_of(amb)
    # ~200 MB in total: one large stream each way plus concurrent medium ones
    jobs = [_transfer(port, 1, 60 << 20, 60 << 20)]
    jobs += [_transfer(port, 100 + i, 8 << 20, 2 << 20) for i in range(8)]
    async with asyncio.timeout(60):
        await asyncio.gather(*jobs)
    snap = amb.snapshot()["routes"][0]
    # every byte counted once each way: the 16-byte header and the data up, the digest and data down
    assert snap["bytes_up"] == 9 * 16 + (60 << 20) + 8 * (8 << 20)
    assert snap["bytes_down"] == 9 * 32 + (60 << 20) + 8 * (2 << 20)


async def test_byte_counts_are_exact_while_open_and_after_close(backends, ambassador_factory):
    """/v1/routes counts each byte once: a greeting the backend sent before the client spoke, the
    traffic of a connection still open, and (FINs not counted) the totals once it closed."""
    async def greeter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello\n")
        await writer.drain()
        while line := await reader.readline():
            writer.write(b"=" + line)
            await writer.drain()

    server = await backends(greeter)
    amb = await ambassador_factory([f"127.0.0.1:0=127.0.0.1:{server.port}"])
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(amb))
    try:
        assert await reader.readline() == b"hello\n"
        payload = random.randbytes(300_000).replace(b"\n", b" ") + b"\n"
        writer.write(payload)
        assert await reader.readexactly(1 + len(payload)) == b"=" + payload
        route = amb.snapshot()["routes"][0]
        assert route["active"] == 1
        assert (route["bytes_up"], route["bytes_down"]) == (len(payload), 6 + 1 + len(payload))
        writer.write_eof()  # the greeter's loop ends, the backend closes, and so do we
        assert await reader.read() == b""
    finally:
        writer.close()
    async with asyncio.timeout(5):
        while amb.routes[0].active:
            await asyncio.sleep(0.01)
    route = amb.snapshot()["routes"][0]
    assert (route["bytes_up"], route["bytes_down"]) == (len(payload), 6 + 1 + len(payload))
    assert route["backends"][0]["bytes_up"] == len(payload)


async def test_half_close_from_the_backend_side(backends, ambassador_factory):
    """The backend finishes its side first; the client can still send, and the backend still reads."""
    got: list[bytes] = []

    async def greeter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"banner\n")
        writer.write_eof()
        got.append(await reader.read())  # to EOF

    server = await backends(greeter)
    amb = await ambassador_factory([f"127.0.0.1:0=127.0.0.1:{server.port}"])
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(amb))
    async with asyncio.timeout(5):
        assert await reader.read() == b"banner\n"  # EOF after the banner: the half-close arrived
        writer.write(b"still talking")
        writer.write_eof()
        while not got:
            await asyncio.sleep(0.01)
    assert got == [b"still talking"]
    writer.close()


async def test_backend_reset_reaches_the_client_as_a_reset(backends, ambassador_factory):
    async def resetter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    server = await backends(resetter)
    amb = await ambassador_factory([f"127.0.0.1:0=127.0.0.1:{server.port}"])
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(amb))
    writer.write(b"go\n")
    with pytest.raises(ConnectionResetError):
        async with asyncio.timeout(5):
            await reader.read()
    writer.close()


async def test_client_reset_reaches_the_backend_as_a_reset(backends, ambassador_factory):
    seen: list[BaseException | bytes] = []

    async def reader_until_end(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"ready\n")
        try:
            seen.append(await reader.read())
        except ConnectionResetError as exc:
            seen.append(exc)

    server = await backends(reader_until_end)
    amb = await ambassador_factory([f"127.0.0.1:0=127.0.0.1:{server.port}"])
    sock = socket.create_connection(("127.0.0.1", port_of(amb)))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    assert await asyncio.wait_for(loop.sock_recv(sock, 100), 5) == b"ready\n"
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    async with asyncio.timeout(5):
        while not seen:
            await asyncio.sleep(0.01)
    assert isinstance(seen[0], ConnectionResetError)


async def test_backend_killed_mid_stream_leaves_other_connections_alone(redis_factory, ambassador_factory):
    r1, r2 = redis_factory(), redis_factory()
    amb = await ambassador_factory([f"127.0.0.1:0=127.0.0.1:{r1.port},127.0.0.1:{r2.port}"], lb="round-robin")
    port = port_of(amb)
    clients = [await Resp.connect(port) for _ in range(6)]
    by_port: dict[int, list[Resp]] = {r1.port: [], r2.port: []}
    for c in clients:
        by_port[await c.server_port()].append(c)
    assert by_port[r1.port] and by_port[r2.port]
    # a bulk reply in flight on a victim connection when its backend dies
    victim = by_port[r1.port][0]
    await victim.call("SET", "big", random.randbytes(8 << 20))
    victim.writer.write(Resp.encode("GET", "big"))
    r1.kill()
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        async with asyncio.timeout(5):
            while True:
                await victim.read_reply()
    for c in by_port[r2.port]:  # the survivors keep working
        for _ in range(50):
            assert await c.call("INCR", "survivor") is not None
        assert await c.call("PING") == "PONG"
    # new connections go to the surviving backend (a failed connect is retried on the next one)
    for _ in range(6):
        c = await Resp.connect(port)
        assert await c.server_port() == r2.port
        await c.close()
    for c in clients:
        await c.close()


async def test_one_thousand_concurrent_connections(backends, ambassador_factory):
    server = await backends()
    amb = await ambassador_factory([f"127.0.0.1:0=127.0.0.1:{server.port}"])
    port = port_of(amb)
    n = 1000
    opened = asyncio.Event()
    count = 0

    async def one(i: int) -> bytes:
        nonlocal count
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"first %d\n" % i)
            first = await reader.readline()
            count += 1
            if count == n:
                opened.set()
            await opened.wait()  # every connection is open through the ambassador at once
            writer.write(b"second %d\n" % i)
            return first + await reader.readline()
        finally:
            writer.close()

    async with asyncio.timeout(60):
        answers = await asyncio.gather(*(one(i) for i in range(n)))
    assert answers == [b"b0:first %d\nb0:second %d\n" % (i, i) for i in range(n)]
    assert amb.snapshot()["routes"][0]["total"] == n


async def test_client_that_never_reads_does_not_stall_others(backends, ambassador_factory):
    """Backpressure: a slow reader fills its own buffers only; other clients flow."""

    async def firehose(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if (await reader.readline()).strip() == b"flood":
            block = b"x" * (1 << 20)
            for _ in range(200):
                writer.write(block)
                await writer.drain()
        else:
            writer.write(b"pong\n")
            await writer.drain()

    server = await backends(firehose)
    amb = await ambassador_factory([f"127.0.0.1:0=127.0.0.1:{server.port}"])
    port = port_of(amb)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"flood\n")
    await asyncio.sleep(0.5)  # the backend blocks on drain; the ambassador must not buffer 200 MB
    for _ in range(20):
        assert await ask(port, b"ping\n") == b"pong\n"
    backend = amb.routes[0].balancer.all_backends()[0]
    assert backend.bytes_down < 64 << 20  # far less than the 200 MB the backend wanted to send
    writer.close()


async def test_redis_benchmark_through_the_ambassador_has_no_errors(redis_factory, ambassador_factory):
    benchmark = require_tool("redis-benchmark", "redis-tools")  # under CI=true a missing tool fails
    redis = redis_factory()
    amb = await ambassador_factory([f"127.0.0.1:0=127.0.0.1:{redis.port}"])
    proc = await asyncio.create_subprocess_exec(
        benchmark, "-h", "127.0.0.1", "-p", str(port_of(amb)), "-c", "50", "-n", "20000",
        "-t", "ping,set,get", "--csv", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err
    rows = [line for line in out.decode().splitlines() if line and not line.startswith('"test"')]
    assert len(rows) >= 3
