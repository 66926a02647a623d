"""Backends failing under an ambassador: hung, black-holed and flapping. Real TCP on loopback.

Already covered elsewhere, not repeated: a backend reset or killed mid-connection reaches only its
own clients as a reset (tests/ambassador/test_pipe.py ``test_backend_reset_reaches_the_client_as_a_reset``,
``test_backend_killed_mid_stream_leaves_other_connections_alone``), refused connects move on to the
next instance and eject (tests/ambassador/test_routes.py ``test_connect_failure_tries_the_next_backend_and_ejects``),
a plain connect timeout moves on (``test_connect_timeout_moves_on``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

from waypost.ambassador.routes import Ambassador
from waypost.catalog import CatalogClient, CheckDef, ServiceDef

REQUEST = b"GET / HTTP/1.1\r\nHost: backend\r\n\r\n"


class HttpBackend:
    """A tiny HTTP/1.1 server answering ``200 <name>``; with ``hang`` set, it accepts new
    connections and reads their requests but never answers (a stuck worker pool)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.hang = False
        self.port = 0
        self.server: asyncio.AbstractServer | None = None
        self.held: set[asyncio.StreamWriter] = set()
        self.hung_connections = 0

    async def start(self) -> HttpBackend:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.held.add(writer)
        try:
            if self.hang:
                self.hung_connections += 1
                while await reader.read(4096):  # swallow, never answer, never close
                    pass
                await asyncio.Event().wait()
            await reader.readuntil(b"\r\n\r\n")
            body = self.name.encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.held.discard(writer)
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for w in list(self.held):
                w.transport.abort()
            self.server = None


class Flapper:
    """A line-echo backend whose listener goes away and comes back every `period` seconds.

    Going down drains the accept queue first and lets accepted connections finish (a restart that
    stops accepting): connects made while it is down are refused, nothing accepted is broken.
    """

    def __init__(self, name: str, period: float) -> None:
        self.name = name
        self.period = period
        self.port = 0
        self.sock: socket.socket | None = None
        self.flips = 0
        self.served = 0
        self._task: asyncio.Task[None] | None = None
        self._conns: set[asyncio.Task[None]] = set()

    def _listen(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(128)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self.sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._accept_all)

    def _accept_all(self) -> None:
        assert self.sock is not None
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            task = asyncio.get_running_loop().create_task(self._serve(conn))
            self._conns.add(task)
            task.add_done_callback(self._conns.discard)

    async def _serve(self, conn: socket.socket) -> None:
        reader, writer = await asyncio.open_connection(sock=conn)
        try:
            while line := await reader.readline():
                writer.write(self.name.encode() + b":" + line)
                await writer.drain()
                self.served += 1
        except ConnectionError:
            pass
        finally:
            writer.close()

    def _down(self) -> None:
        assert self.sock is not None
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self._accept_all()  # what the kernel already accepted is served, not reset
        self.sock.close()
        self.sock = None

    async def start(self) -> Flapper:
        self._listen()
        self._task = asyncio.get_running_loop().create_task(self._flap())
        return self

    async def _flap(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            if self.sock is not None:
                self._down()
            else:
                self._listen()
            self.flips += 1

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.sock is not None:
            self._down()
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)


async def http_get(port: int, timeout: float) -> tuple[bytes, float]:
    """One request through the ambassador: (body, seconds). Raises TimeoutError on no answer."""
    t0 = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        async with asyncio.timeout(timeout):
            writer.write(REQUEST)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            return await reader.readexactly(length), time.monotonic() - t0
    finally:
        writer.close()  # a plain close (FIN), as a client giving up does


async def ask_line(port: int, line: bytes = b"hi\n", timeout: float = 3.0) -> tuple[bytes, float]:
    t0 = time.monotonic()
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(line)
            return await reader.readline(), time.monotonic() - t0
        finally:
            writer.close()


def backend_states(amb: Ambassador) -> dict[int, dict]:
    return {int(b["address"].rsplit(":", 1)[1]): b for b in amb.snapshot()["routes"][0]["backends"]}


async def test_hung_backend_stalls_only_its_own_clients_until_its_check_removes_it(
        catalog_client: CatalogClient, ambassador_factory) -> None:
    """A backend that accepts but never answers: its clients time out on their side, clients of the
    healthy instance are answered at once meanwhile; the catalog's HTTP check (timeout 0.5 s) marks
    it critical, the ambassador stops sending it new connections, and with --drain-timeout the
    half-open connections the timed-out clients left behind are closed too."""
    good, hung = await HttpBackend("good").start(), await HttpBackend("hung").start()
    try:
        for b in (good, hung):
            check = CheckDef("http", f"http://127.0.0.1:{b.port}/", interval="1s", timeout="500ms",
                             initial_status="passing")
            await catalog_client.register(ServiceDef(f"api-{b.name}", "api", "127.0.0.1", b.port, checks=(check,)))
        amb = await ambassador_factory(["127.0.0.1:0=api"], catalog_client, lb="round-robin", drain_timeout=1.0)
        port = amb.routes[0].listen_address[1]
        deadline = time.monotonic() + 5
        while len(backend_states(amb)) < 2:
            assert time.monotonic() < deadline, "the ambassador never got both instances"
            await asyncio.sleep(0.05)

        hung.hang = True
        results = await asyncio.gather(*(http_get(port, timeout=1.5) for _ in range(10)), return_exceptions=True)
        answered = [r for r in results if isinstance(r, tuple)]
        timed_out = [r for r in results if isinstance(r, TimeoutError)]
        assert len(answered) == 5 and len(timed_out) == 5, results  # round-robin: half on each
        assert all(body == b"good" and took < 0.5 for body, took in answered), answered
        assert hung.hung_connections >= 5

        deadline = time.monotonic() + 6  # check interval 1 s + timeout 0.5 s + the watch
        while backend_states(amb)[hung.port]["state"] == "up":
            assert time.monotonic() < deadline, "the failing check never took the hung instance out"
            await asyncio.sleep(0.05)
        for _ in range(20):
            body, took = await http_get(port, timeout=1.5)
            assert body == b"good" and took < 0.5

        deadline = time.monotonic() + 5  # drain timeout 1 s: the half-open leftovers are closed
        while amb.routes[0].active or hung.port in backend_states(amb):
            assert time.monotonic() < deadline, amb.snapshot()
            await asyncio.sleep(0.05)
    finally:
        await hung.stop()
        await good.stop()


async def test_black_holed_backend_is_ejected_and_stops_costing_connect_timeouts(ambassador_factory) -> None:
    """SYNs to a listener with a full accept queue are dropped: connects time out. Clients never see
    it (the next instance is tried), the backend is ejected after 2 timeouts, and from then on no
    client pays the connect timeout."""
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(0)
    fillers = []
    for _ in range(4):  # fill the accept queue: further SYNs are dropped by the kernel
        s = socket.socket()
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            s.connect(blackhole.getsockname())
        fillers.append(s)
    await asyncio.sleep(0.1)
    live = await HttpBackend("live").start()
    dead_port = blackhole.getsockname()[1]
    try:
        amb = await ambassador_factory([f"127.0.0.1:0=127.0.0.1:{dead_port},127.0.0.1:{live.port}"], lb="round-robin",
                                connect_timeout=0.3, eject_after=2, eject_base=30.0)
        port = amb.routes[0].listen_address[1]
        # a burst arriving while the dead backend is still in rotation: nobody fails
        results = await asyncio.gather(*(http_get(port, timeout=5) for _ in range(20)))
        assert all(body == b"live" for body, _ in results)
        slow = [took for _, took in results if took >= 0.3]
        assert slow, "some connects should have gone to the black hole first"
        state = backend_states(amb)[dead_port]
        assert state["state"] == "ejected" and state["connect_failures"] >= 2
        assert amb.routes[0].counters.all_failed == 0

        for _ in range(30):  # ejected: nobody waits for the connect timeout any more
            body, took = await http_get(port, timeout=5)
            assert body == b"live" and took < 0.2, took
        assert backend_states(amb)[dead_port]["state"] == "ejected"
    finally:
        await live.stop()
        for s in fillers:
            s.close()
        blackhole.close()


async def test_flapping_backend_fails_no_request_while_a_healthy_one_exists(ambassador_factory) -> None:
    """One backend's listener goes down and up every 200 ms for ~3 s of steady traffic: connects to
    it are refused half the time, the ambassador retries the healthy one, and no request fails."""
    flapper = await Flapper("flap", 0.2).start()
    steady = await Flapper("steady", 3600).start()
    try:
        amb = await ambassador_factory([f"127.0.0.1:0=127.0.0.1:{flapper.port},127.0.0.1:{steady.port}"], lb="round-robin",
                                connect_timeout=1.0, retries=2, eject_after=3, eject_base=0.2, eject_max=0.4)
        port = amb.routes[0].listen_address[1]
        failures: list[str] = []
        answered: dict[bytes, int] = {}
        stop_at = time.monotonic() + 3.0

        async def client(n: int) -> None:
            i = 0
            while time.monotonic() < stop_at and i < 2000:
                try:
                    line, _ = await ask_line(port, b"%d-%d\n" % (n, i))
                except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                    failures.append(f"{exc.__class__.__name__}: {exc}")
                else:
                    if line != b"flap:%d-%d\n" % (n, i) and line != b"steady:%d-%d\n" % (n, i):
                        failures.append(f"wrong answer {line!r}")
                    else:
                        name = line.split(b":")[0]
                        answered[name] = answered.get(name, 0) + 1
                i += 1
                await asyncio.sleep(0.005)

        await asyncio.gather(*(client(n) for n in range(8)))
        assert not failures, f"{len(failures)} failed requests, e.g. {failures[:3]}"
        assert flapper.flips >= 10
        assert answered.get(b"flap", 0) > 0 and answered.get(b"steady", 0) > 0, answered
        assert amb.routes[0].counters.connect_failures > 0  # the flapping was seen, and absorbed
        assert amb.routes[0].counters.all_failed == 0
    finally:
        await flapper.stop()
        await steady.stop()
