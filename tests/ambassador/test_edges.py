"""Edge cases a review found: half-closed pipes at drain/stop, --idle-timeout against stuck and slow
peers, a backend removed while a connect to it is in flight, and a backend dead for very long."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from waypost.ambassador.balancer import Balancer
from waypost.ambassador.routes import Options, Route, parse_route

BIG = 16_000_000


async def _download_or_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """`big\\n` → BIG bytes then close (a finished download); anything else is echoed."""
    line = await reader.readline()
    if line == b"big\n":
        writer.write(b"y" * BIG)
        await writer.drain()
        writer.close()
        return
    while line:
        writer.write(line)
        line = await reader.readline()
    writer.close()


def _raw(port: int, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: a small window
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


async def _half_closed_pipe(route: Route, port: int) -> socket.socket:
    """A client that asked for the download (and said it has nothing more to send) and reads it too
    slowly: the backend finishes and closes while the ambassador still has bytes for the client
    (upstream side gone, client side flushing)."""
    slow = _raw(port, rcvbuf=4096)
    slow.send(b"big\n")
    slow.shutdown(socket.SHUT_WR)
    async with asyncio.timeout(20):
        while not any(p.upstream.lost and not p.client.lost for p in route.pipes):
            try:
                slow.recv(16384)
            except BlockingIOError:
                pass
            await asyncio.sleep(0.002)
    return slow


def _was_reset(sock: socket.socket, timeout: float = 3.0) -> bool:
    """Drain `sock` until it ends: True when it ended with a reset (not a FIN)."""
    sock.setblocking(True)
    sock.settimeout(timeout)
    try:
        while sock.recv(1 << 20):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return False


@pytest.mark.parametrize("how", ["drain-timeout", "stop"])
async def test_every_connection_is_reset_even_with_a_half_closed_one(backends, how: str) -> None:
    server = await backends(_download_or_echo, name="dl")
    route = Route(parse_route("127.0.0.1:0=svc"), Options(drain_timeout=0.3))
    route.set_backends([("127.0.0.1", server.port)])
    await route.start()
    errors: list[Any] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    try:
        port = route.listen_address[1]
        slow = await _half_closed_pipe(route, port)
        others = [_raw(port) for _ in range(5)]
        for sock in others:
            sock.send(b"hello\n")
        async with asyncio.timeout(5):
            while len(route.pipes) < 6:
                await asyncio.sleep(0.01)
        if how == "stop":
            await route.stop()  # must not raise halfway
        else:
            route.set_backends([])  # the instance left the catalog: reset after --drain-timeout
        resets = await asyncio.gather(*(asyncio.to_thread(_was_reset, s) for s in others))
        assert all(resets), f"connections left open or closed cleanly: {resets}"
        async with asyncio.timeout(3):
            while route.pipes:
                await asyncio.sleep(0.02)
        assert route.balancer.draining == {} and errors == []
        slow.close()
    finally:
        await route.stop()


async def test_idle_timeout_resets_and_frees_a_connection_whose_backend_stopped_reading(backends) -> None:
    """The client uploads to a backend that never reads, then goes silent and leaves: the
    connection (and its --max-conns slot) must be freed, with a reset, not held forever."""
    async def wedged(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.Event().wait()

    server = await backends(wedged, name="wedged")
    route = Route(parse_route(f"127.0.0.1:0=127.0.0.1:{server.port}"), Options(idle_timeout=0.3, max_conns=1))
    await route.start()
    try:
        client = _raw(route.listen_address[1])
        loop = asyncio.get_running_loop()
        until = loop.time() + 0.3
        while loop.time() < until:  # fill every buffer on the way
            try:
                client.send(b"x" * 65536)
            except BlockingIOError:
                await asyncio.sleep(0.01)
        assert await asyncio.to_thread(_was_reset, client, 3.0)
        client.close()
        async with asyncio.timeout(3):
            while route.active or route.limiter.active:
                await asyncio.sleep(0.02)
        assert route.counters.idle_closed == 1  # once, not once per sweep
        assert await asyncio.to_thread(_roundtrip_refused, route.listen_address[1]) is False  # the slot is free
    finally:
        await route.stop()


def _roundtrip_refused(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.settimeout(1.0)
        try:
            return sock.recv(1) == b"" and False
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False  # accepted and proxied to the wedged backend: not refused


async def test_idle_timeout_spares_a_slow_reader_that_is_still_being_fed(backends) -> None:
    """Bytes reaching a slow reader are activity, even while the backend is paused by backpressure."""
    async def stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"z" * 3_000_000)
        await writer.drain()
        writer.close()

    server = await backends(stream, name="stream")
    route = Route(parse_route(f"127.0.0.1:0=127.0.0.1:{server.port}"), Options(idle_timeout=0.2))
    await route.start()
    try:
        client = _raw(route.listen_address[1])
        got, ended = 0, ""
        async with asyncio.timeout(30):
            while not ended:  # ~640 KB/s: far slower than the backend, never silent for 0.2 s
                try:
                    chunk = client.recv(32768)
                    if not chunk:
                        ended = "eof"
                    got += len(chunk)
                except BlockingIOError:
                    pass
                except ConnectionResetError:
                    ended = "reset"
                await asyncio.sleep(0.05)
        client.close()
        assert (ended, got) == ("eof", 3_000_000)
        assert route.counters.idle_closed == 0
    finally:
        await route.stop()


async def test_backend_removed_during_a_connect_gets_no_connection(backends, monkeypatch) -> None:
    """The catalog drops an instance while a connect to it is in flight: the client is served by an
    instance still in the set, so draining and /v1/routes never miss a connection."""
    old = await backends(name="old")
    new = await backends(name="new")
    route = Route(parse_route("127.0.0.1:0=svc"), Options(lb="round-robin"))
    route.set_backends([("127.0.0.1", old.port)])
    await route.start()
    loop = asyncio.get_running_loop()
    real = loop.create_connection
    removed = asyncio.Event()

    async def slow_connect(factory, host, port, **kw):  # type: ignore[no-untyped-def]
        result = await real(factory, host, port, **kw)
        if port == old.port and not removed.is_set():
            route.set_backends([("127.0.0.1", new.port)])  # the catalog moves on meanwhile
            removed.set()
        return result

    monkeypatch.setattr(loop, "create_connection", slow_connect)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", route.listen_address[1])
        writer.write(b"hi\n")
        assert await asyncio.wait_for(reader.readline(), 3) == b"new:hi\n"
        writer.close()
        assert removed.is_set()
        assert [b["address"] for b in route.snapshot()["backends"]] == [f"127.0.0.1:{new.port}"]
    finally:
        await route.stop()


def test_cooldown_stays_capped_for_a_backend_dead_for_days() -> None:
    """2 ** ejections overflowed a float after ~1024 ejections (~17 h dead under traffic)."""
    now = [0.0]
    balancer = Balancer(eject_after=1, name="r", clock=lambda: now[0])
    balancer.set_backends([("127.0.0.1", 1)])
    (backend,) = balancer.backends.values()
    for _ in range(2000):
        failed_at = now[0]
        balancer.connect_failed(backend, "refused")
        assert backend.eject_until - failed_at <= balancer.eject_max + 1e-6
        now[0] = backend.eject_until + 0.001  # the cool-down ends; it fails again
    assert backend.ejections == 2000
    assert backend.eject_until - failed_at == pytest.approx(balancer.eject_max)
