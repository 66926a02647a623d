"""Routes: parsing, live backend changes under load, waiting for backends, retries, limits, draining."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import pytest

from tests.ambassador.conftest import ask, port_of
from waypost.ambassador.balancer import Endpoint
from waypost.ambassador.routes import Ambassador, Options, Route, RouteSpec, parse_route
from waypost.config import ConfigError


@pytest.mark.parametrize(("text", "host", "port", "service", "tag", "static"), [
    ("127.127.0.2:6379=redis", "127.127.0.2", 6379, "redis", None, ()),
    ("6379=redis#primary", "127.0.0.1", 6379, "redis", "primary", ()),
    ("[::1]:6379=redis", "::1", 6379, "redis", None, ()),
    ("6379=10.0.0.5:6379,10.0.0.6:6380", "127.0.0.1", 6379, None, None,
     (Endpoint("10.0.0.5", 6379), Endpoint("10.0.0.6", 6380))),
    ("0.0.0.0:80=[fd00::1]:8080", "0.0.0.0", 80, None, None, (Endpoint("fd00::1", 8080),)),
    ("5432=db.internal:5432", "127.0.0.1", 5432, None, None, (Endpoint("db.internal", 5432),)),
])
def test_parse_route(text, host, port, service, tag, static):
    spec = parse_route(text)
    assert (spec.listen_host, spec.listen_port, spec.service, spec.tag, spec.static) == \
        (host, port, service, tag, static)


@pytest.mark.parametrize("text", [
    "redis", "=redis", "6379=", "99999=redis", "6379=re dis", "6379=redis#", "6379=10.0.0.1:",
    "6379=10.0.0.1:6379,", "6379=10.0.0.1:x", "[::1=redis", "host:port=redis",
])
def test_parse_route_errors_name_the_flag(text):
    with pytest.raises(ConfigError, match=r"--route"):
        parse_route(text)


async def test_port_in_use_is_a_config_error_naming_the_route(ambassador_factory):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"--route '127.0.0.1:{port}=.*in use"):
            await ambassador_factory([f"127.0.0.1:{port}=127.0.0.1:1"])


async def test_backends_added_and_removed_under_continuous_load(backends, ambassador_factory):
    a, b, c = await backends(name="a"), await backends(name="b"), await backends(name="c")
    amb = await ambassador_factory([f"127.0.0.1:0=127.0.0.1:{a.port}"], lb="round-robin")
    route = amb.routes[0]
    port = port_of(amb)
    answers: list[bytes] = []
    failures: list[str] = []
    stop = asyncio.Event()

    async def short_requests() -> None:  # a new connection per request
        while not stop.is_set():
            try:
                answers.append(await ask(port, b"req\n", timeout=3))
            except (OSError, TimeoutError) as exc:
                failures.append(repr(exc))

    async def long_lived() -> list[bytes]:  # one connection through all the changes
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        seen = []
        while not stop.is_set():
            writer.write(b"again\n")
            seen.append(await reader.readline())
            await asyncio.sleep(0.005)
        writer.close()
        return seen

    workers = [asyncio.create_task(short_requests()) for _ in range(8)]
    keeper = asyncio.create_task(long_lived())
    await asyncio.sleep(0.3)
    route.set_backends([a.endpoint, b.endpoint])
    await asyncio.sleep(0.3)
    route.set_backends([b.endpoint, c.endpoint])  # a leaves: it drains, its connections carry on
    mark = len(answers)
    await asyncio.sleep(0.3)
    route.set_backends([c.endpoint])
    mark_c = len(answers)
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.gather(*workers)
    kept = await keeper

    assert failures == []
    assert len(answers) > 100
    assert all(x.startswith((b"a:", b"b:", b"c:")) for x in answers)
    # after a was removed no new request reached it; after b was removed none reached b
    assert not any(x.startswith(b"a:") for x in answers[mark + 8:])
    assert not any(x.startswith(b"b:") for x in answers[mark_c + 8:])
    assert {x[:2] for x in answers} == {b"a:", b"b:", b"c:"}
    # the long-lived connection stayed on a (draining) the whole time, without a hiccup
    assert kept and set(kept) == {b"a:again\n"}


async def test_removed_and_killed_backend_fails_only_its_own_connections(backends, ambassador_factory):
    a, b = await backends(name="a"), await backends(name="b")
    amb = await ambassador_factory([f"127.0.0.1:0=127.0.0.1:{a.port},127.0.0.1:{b.port}"], lb="round-robin")
    port = port_of(amb)
    on_a = []
    while len(on_a) < 2:  # long-lived connections that landed on a
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"who\n")
        if await reader.readline() == b"a:who\n":
            on_a.append((reader, writer))
        else:
            writer.close()
    failures: list[str] = []
    answers: list[bytes] = []
    stop = asyncio.Event()

    async def short_requests() -> None:
        while not stop.is_set():
            try:
                answers.append(await ask(port, b"req\n", timeout=3))
            except (OSError, TimeoutError) as exc:
                failures.append(repr(exc))

    workers = [asyncio.create_task(short_requests()) for _ in range(6)]
    await asyncio.sleep(0.2)
    amb.routes[0].set_backends([b.endpoint])
    await asyncio.sleep(0.05)
    await a.stop(reset_open=True)  # the removed backend dies with connections open
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.gather(*workers)
    assert failures == [] and len(answers) > 50
    for reader, writer in on_a:  # only the connections that were on a see the end
        with contextlib.suppress(ConnectionResetError):
            assert await asyncio.wait_for(reader.read(), 3) == b""
        writer.close()
    async with asyncio.timeout(2):  # and then a is forgotten
        while amb.routes[0].balancer.draining:
            await asyncio.sleep(0.01)


async def test_new_backend_takes_the_very_next_connection(backends, ambassador_factory):
    old, new = await backends(name="old"), await backends(name="new")
    amb = await ambassador_factory([f"127.0.0.1:0=127.0.0.1:{old.port}"])
    port = port_of(amb)
    assert await ask(port) == b"old:hello\n"
    amb.routes[0].set_backends([new.endpoint])
    assert await ask(port) == b"new:hello\n"


async def test_no_backends_then_one_appears(backends, caplog):
    route = Route(RouteSpec("127.0.0.1", 0, service="later", text="127.0.0.1:0=later"),
                  Options(wait_for_backends=5))
    await route.start()
    try:
        port = route.listen_address[1]
        pending = asyncio.create_task(ask(port, b"waiting\n"))
        await asyncio.sleep(0.3)
        assert not pending.done()  # held, not refused
        late = await backends(name="late")
        route.set_backends([late.endpoint])
        assert await asyncio.wait_for(pending, 2) == b"late:waiting\n"
    finally:
        await route.stop()


async def test_no_backends_ever_closes_cleanly_after_the_wait(caplog):
    route = Route(RouteSpec("127.0.0.1", 0, service="ghost", text="127.0.0.1:0=ghost"),
                  Options(wait_for_backends=0.3))
    await route.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", route.listen_address[1])
        writer.write(b"anyone?\n")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with caplog.at_level(logging.WARNING, "waypost.ambassador"):
            assert await asyncio.wait_for(reader.read(), 3) == b""  # a clean EOF, not a hang or reset
        assert 0.25 < loop.time() - t0 < 2
        assert "no backends for ghost after waiting 0.3s" in caplog.text
        writer.close()
        assert route.active == 0 and route.counters.no_backend == 1
    finally:
        await route.stop()


async def test_connect_failure_tries_the_next_backend_and_ejects(backends, ambassador_factory, refusing_port):
    live = await backends(name="live")
    dead = refusing_port()
    amb = await ambassador_factory([f"127.0.0.1:0=127.0.0.1:{dead},127.0.0.1:{live.port}"],
                                   lb="round-robin", eject_after=2)
    port = port_of(amb)
    for _ in range(10):
        assert await ask(port) == b"live:hello\n"  # never a failed request
    states = {b["address"]: b for b in amb.snapshot()["routes"][0]["backends"]}
    assert states[f"127.0.0.1:{dead}"]["state"] == "ejected"
    assert states[f"127.0.0.1:{dead}"]["connect_failures"] == 2


async def test_retries_exhausted_closes_the_client_with_a_log_line(ambassador_factory, caplog, refusing_port):
    dead = [refusing_port() for _ in range(3)]
    amb = await ambassador_factory(["127.0.0.1:0=" + ",".join(f"127.0.0.1:{p}" for p in dead)], retries=1)
    with caplog.at_level(logging.WARNING, "waypost.ambassador"):
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(amb))
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
    assert "after 2 attempt(s) (--retries 1)" in caplog.text
    assert amb.routes[0].counters.connect_failures == 2


async def test_connect_timeout_moves_on(backends, ambassador_factory):
    # a listener whose backlog is full never completes the handshake: SYNs are dropped
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(0)
    fillers = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(blackhole.getsockname())
        except BlockingIOError:
            pass
        fillers.append(s)
    live = await backends(name="live")
    amb = await ambassador_factory(
        [f"127.0.0.1:0=127.0.0.1:{blackhole.getsockname()[1]},127.0.0.1:{live.port}"],
        lb="round-robin", connect_timeout=0.2)
    try:
        for _ in range(4):
            assert await ask(port_of(amb)) == b"live:hello\n"
    finally:
        for s in fillers:
            s.close()
        blackhole.close()


async def test_max_conns_refuses_new_connections_and_keeps_serving(backends, ambassador_factory, caplog):
    server = await backends(name="s")
    amb = await ambassador_factory([f"127.0.0.1:0=127.0.0.1:{server.port}"], max_conns=5)
    port = port_of(amb)
    held = []
    for i in range(5):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"%d\n" % i)
        assert await reader.readline() == b"s:%d\n" % i
        held.append((reader, writer))
    with caplog.at_level(logging.WARNING, "waypost.ambassador"):
        for _ in range(3):
            with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                try:
                    writer.write(b"more\n")
                    await asyncio.wait_for(reader.readexactly(1), 3)
                finally:
                    writer.close()
    assert caplog.text.count("connection limit reached (--max-conns 5") == 1  # rate-limited
    for i, (reader, writer) in enumerate(held):  # the open ones are untouched
        writer.write(b"still %d\n" % i)
        assert await reader.readline() == b"s:still %d\n" % i
    held[0][1].close()
    await asyncio.sleep(0.1)
    assert await ask(port) == b"s:hello\n"  # room again
    for _, writer in held[1:]:
        writer.close()
    assert amb.snapshot()["refused"] == 3


async def test_drain_timeout_resets_connections_to_a_removed_backend(backends, ambassador_factory):
    old, new = await backends(name="old"), await backends(name="new")
    amb = await ambassador_factory([f"127.0.0.1:0=127.0.0.1:{old.port}"], drain_timeout=0.3)
    port = port_of(amb)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"x\n")
    assert await reader.readline() == b"old:x\n"
    amb.routes[0].set_backends([new.endpoint])
    writer.write(b"y\n")
    assert await reader.readline() == b"old:y\n"  # still served while draining
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(reader.read(), 3)
    assert await ask(port) == b"new:hello\n"
    assert [b["address"] for b in amb.snapshot()["routes"][0]["backends"]] == [f"127.0.0.1:{new.port}"]


async def test_listener_can_be_a_socket_made_elsewhere(backends):
    """Injection binds the socket inside another namespace and hands it over."""
    server = await backends(name="s")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    amb = Ambassador(options=Options())
    await amb.start()
    try:
        route = await amb.add_route(parse_route(f"0=127.0.0.1:{server.port}"), sock=sock, name="container-x")
        assert route.listen_address == sock.getsockname()
        assert await ask(sock.getsockname()[1]) == b"s:hello\n"
        assert amb.snapshot()["routes"][0]["name"] == "container-x"
        await amb.remove_route(route)
        with pytest.raises(OSError):
            await ask(sock.getsockname()[1])
        assert amb.routes == []
    finally:
        await amb.stop()


async def test_ipv6_listen_and_backend(backends, ambassador_factory):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this kernel")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1 loopback address here")

    async def v6_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"v6:" + await reader.readline())

    server = await asyncio.start_server(v6_echo, "::1", 0)
    try:
        v6_port = server.sockets[0].getsockname()[1]
        amb = await ambassador_factory([f"[::1]:0=[::1]:{v6_port}"])
        assert amb.routes[0].snapshot()["listen"].startswith("[::1]:")
        reader, writer = await asyncio.open_connection("::1", port_of(amb))
        writer.write(b"hi\n")
        assert await asyncio.wait_for(reader.readline(), 3) == b"v6:hi\n"
        writer.close()
    finally:
        server.close()


async def test_idle_timeout_frees_a_connection_whose_backend_hung(backends, ambassador_factory):
    """A backend that never answers nor closes: once the client gives up (half-close), --idle-timeout
    closes both halves instead of holding the upstream connection forever."""
    async def hung(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # reads the request and the client's end of stream...
        await asyncio.Event().wait()  # ...and then neither answers nor closes

    server = await backends(hung, name="hung")
    amb = await ambassador_factory([f"127.0.0.1:0=127.0.0.1:{server.port}"], idle_timeout=0.3)
    route = amb.routes[0]
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(amb))
    writer.write(b"anyone there?\n")
    writer.write_eof()  # the client gives up waiting
    async with asyncio.timeout(3):
        assert await reader.read() == b""  # a clean end of stream, not a reset, not a hang
        while route.active:  # the upstream half is gone too
            await asyncio.sleep(0.02)
    writer.close()
    assert route.snapshot()["idle_closed"] == 1


async def test_idle_timeout_spares_connections_that_keep_talking(backends, ambassador_factory):
    server = await backends(name="s")
    amb = await ambassador_factory([f"127.0.0.1:0=127.0.0.1:{server.port}"], idle_timeout=0.8)
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(amb))
    for i in range(12):  # 1.8 s in all, never 0.8 s quiet
        writer.write(b"%d\n" % i)
        assert await asyncio.wait_for(reader.readline(), 2) == b"s:%d\n" % i
        await asyncio.sleep(0.15)
    writer.close()
    assert amb.routes[0].snapshot()["idle_closed"] == 0


async def test_without_idle_timeout_quiet_connections_stay_open(backends, ambassador_factory):
    """The default never closes idle connections (client pools keep them for minutes)."""
    server = await backends(name="s")
    amb = await ambassador_factory([f"127.0.0.1:0=127.0.0.1:{server.port}"])
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(amb))
    writer.write(b"a\n")
    assert await reader.readline() == b"s:a\n"
    await asyncio.sleep(1.0)
    writer.write(b"b\n")
    assert await asyncio.wait_for(reader.readline(), 2) == b"s:b\n"
    writer.close()


def test_idle_timeout_must_be_positive():
    with pytest.raises(ConfigError, match="--idle-timeout"):
        Options(idle_timeout=0)


async def test_a_new_instance_that_is_not_listening_yet_is_retried_not_failed(ambassador_factory, refusing_port):
    """Registrators record a container as it starts, a moment before its process listens. A client
    sent to it in that moment is held and retried (within --wait-for-backends), not closed."""
    amb = await ambassador_factory(["127.0.0.1:0=web"], eject_after=2)
    route = amb.routes[0]
    route.set_backends([])  # the first catalog answer: no instance yet
    held = refusing_port(sock=True)
    port = held.getsockname()[1]
    route.set_backends([("127.0.0.1", port)])  # registered, but nothing listens yet
    answer = asyncio.ensure_future(ask(port_of(amb), b"early\n"))
    await asyncio.sleep(0.3)  # several refused connects meanwhile
    assert not answer.done()

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"late:" + await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(greet, sock=held)
    try:
        assert await asyncio.wait_for(answer, 3) == b"late:early\n"
        [backend] = route.snapshot()["backends"]
        assert backend["state"] == "up"  # refusals while starting don't eject it
        assert backend["connect_failures"] >= 2
    finally:
        server.close()


async def test_an_established_instance_that_refuses_fails_fast(ambassador_factory, refusing_port):
    """The grace is for new instances only: one from the first answer that refuses is a failure."""
    amb = await ambassador_factory(["127.0.0.1:0=web"], retries=0)
    amb.routes[0].set_backends([("127.0.0.1", refusing_port())])  # the first answer
    loop = asyncio.get_running_loop()
    started = loop.time()
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(amb))
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    assert loop.time() - started < 1.0
