"""Catalog outage: DNS and a sidecar ambassador keep serving last-known data, then converge.

The catalog runs as its own process (``waypost catalog --listen … --data-dir …``), is killed with
SIGKILL and stays away for ``OUTAGE`` seconds — 10 s here to keep the suite fast; ``bench/soak.py``
does the issue's 30 s — while a :class:`DnsServer` + :class:`CatalogView` and an :class:`Ambassador`
following the catalog keep answering from what they last read. When the catalog is back (same data
dir) a new registration must show up in DNS and as an ambassador backend within ``CONVERGE``
seconds: the watches retry at most every 5 s (their maximum backoff), plus a little for a busy CI box.

Not repeated here (already covered with real peers):

- the registrator retrying writes while the catalog is down and re-registering everything when an
  in-memory catalog comes back empty: tests/registrator/test_docker.py
  ``test_catalog_restart_without_state_is_repaired`` (real dockerd, real catalog restarted empty) and
  tests/registrator/test_sync.py ``test_catalog_down_during_sync_then_back`` /
  ``test_catalog_restart_without_state_is_repaired_by_sync``;
- acknowledged writes surviving SIGKILL mid-burst: tests/catalog/test_server_persist.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from tests.dns.helpers import ask, records
from tests.ports import free_port
from tests.proxying import ask as through
from waypost.ambassador.routes import Ambassador, Options
from waypost.catalog import CatalogClient, ServiceDef
from waypost.config import CatalogConfig
from waypost.dns import CatalogView, DnsConfig, DnsServer

OUTAGE = 10.0  # seconds the catalog is away (the soak bench does 30)
CONVERGE = 7.0  # seconds from "catalog answers again" to every consumer showing the new state


class CatalogProcess:
    """``python -m waypost catalog`` on a fixed loopback port, its log in a file."""

    def __init__(self, port: int, data_dir: str | None, log_dir: Path) -> None:
        self.port = port
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    async def start(self, timeout: float = 15.0) -> None:
        self.starts += 1
        argv = [sys.executable, "-m", "waypost", "catalog", "--listen", f"127.0.0.1:{self.port}",
                "--node", "outage-node"]
        if self.data_dir:
            argv += ["--data-dir", self.data_dir]
        with open(self.log_dir / f"catalog-{self.starts}.log", "wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, f"catalog exited: {self.log()}"
                try:
                    async with http.get(self.url + "/v1/status/leader",
                                        timeout=aiohttp.ClientTimeout(total=1)) as resp:
                        if resp.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError(f"catalog did not answer within {timeout}s: {self.log()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def log(self) -> str:
        return (self.log_dir / f"catalog-{self.starts}.log").read_text(errors="replace")


@pytest.fixture
async def catalog_proc(tmp_path: Path) -> AsyncIterator[Callable[[bool], Awaitable[CatalogProcess]]]:
    made: list[CatalogProcess] = []

    async def make(durable: bool = True) -> CatalogProcess:
        proc = CatalogProcess(free_port(), str(tmp_path / "data") if durable else None, tmp_path)
        made.append(proc)
        await proc.start()
        return proc

    yield make
    for proc in made:
        proc.kill()


class EchoServer:
    """A line-echo TCP server answering ``name:line``, on a chosen loopback address."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self.server: asyncio.AbstractServer | None = None

    async def start(self, host: str) -> EchoServer:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while line := await reader.readline():
                    writer.write(self.name.encode() + b":" + line)
                    await writer.drain()
            except ConnectionError:
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(handle, host, 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None


@pytest.fixture
async def echo_backends() -> AsyncIterator[Callable[[str, str], Awaitable[EchoServer]]]:
    made: list[EchoServer] = []

    async def make(name: str, host: str = "127.0.0.1") -> EchoServer:
        made.append(await EchoServer(name).start(host))
        return made[-1]

    yield make
    for b in made:
        await b.stop()


def stale_metric(server: DnsServer) -> float | None:
    return server.registry.get_sample_value("waypost_dns_catalog_stale")


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> float:
    """Poll `check` until true; returns the seconds it took."""
    t0 = time.monotonic()
    while not await check():
        assert time.monotonic() - t0 < timeout, f"{what}: not within {timeout}s"
        await asyncio.sleep(0.05)
    return time.monotonic() - t0


@pytest.mark.slow
async def test_outage_keeps_last_known_data_and_converges_after(catalog_proc, echo_backends) -> None:
    catalog = await catalog_proc(True)
    b1 = await echo_backends("b1", "127.0.0.1")
    b2 = await echo_backends("b2", "127.0.0.2")
    client = CatalogClient(CatalogConfig.from_url(catalog.url))
    view = CatalogView(client)
    dns = DnsServer(DnsConfig(listen=("127.0.0.1", 0)), view)
    amb = Ambassador(["127.0.0.1:0=web"], client, Options(lb="round-robin", connect_timeout=1.0))
    held: asyncio.StreamWriter | None = None
    try:
        await client.register(ServiceDef(id="web-1", name="web", address="127.0.0.1", port=b1.port))
        await view.start()
        await dns.start()
        await view.wait_synced(10)
        await amb.start()
        route = amb.routes[0]
        port = route.listen_address[1]
        await eventually(lambda: _routes_to(port, b"b1"), 5, "ambassador routes to b1")
        assert records(await ask(dns, "web.service.consul")) == ["127.0.0.1"]
        assert stale_metric(dns) == 0.0

        # a connection opened before the outage, used across it
        reader, held = await asyncio.open_connection("127.0.0.1", port)
        held.write(b"before\n")
        assert await reader.readline() == b"b1:before\n"

        catalog.kill()
        outage_end = time.monotonic() + OUTAGE
        answers = connections = 0
        while time.monotonic() < outage_end:
            msg = await ask(dns, "web.service.consul")
            assert records(msg) == ["127.0.0.1"], "DNS must keep the last-known answer during the outage"
            srv = await ask(dns, "web.service.consul", "SRV")
            assert [rr.port for rrset in srv.answer for rr in rrset] == [b1.port]
            answers += 2
            assert await through(port, b"during\n") == b"b1:during\n", "ambassador lost its backend"
            connections += 1
            await asyncio.sleep(0.2)
        assert answers >= 20 and connections >= 10
        assert view.stale, "the view must say it serves last-known data"
        assert stale_metric(dns) == 1.0
        assert route.snapshot()["catalog_reachable"] is False
        assert [b["state"] for b in route.snapshot()["backends"]] == ["up"]  # not drained by the outage

        await catalog.start()  # same data dir
        back = time.monotonic()
        assert "web-1" in await client.local_services(), "the registration must survive the SIGKILL"
        await client.register(ServiceDef(id="web-2", name="web", address="127.0.0.2", port=b2.port))

        async def dns_has_both() -> bool:
            return records(await ask(dns, "web.service.consul")) == ["127.0.0.1", "127.0.0.2"]

        await eventually(dns_has_both, CONVERGE, "new registration in DNS")
        await eventually(lambda: _routes_to(port, b"b2"), CONVERGE - (time.monotonic() - back),
                         "new registration as an ambassador backend")
        await eventually(_is(lambda: not view.stale and stale_metric(dns) == 0.0), CONVERGE, "stale flag cleared")
        took = time.monotonic() - back
        assert took < CONVERGE
        assert route.snapshot()["catalog_reachable"] is True
        assert sorted(b["address"] for b in route.snapshot()["backends"]) == [
            f"127.0.0.1:{b1.port}", f"127.0.0.2:{b2.port}"]

        held.write(b"after\n")  # the long-lived connection never noticed
        assert await asyncio.wait_for(reader.readline(), 3) == b"b1:after\n"
    finally:
        if held is not None:
            held.close()
        await amb.stop()
        await dns.stop()
        await view.stop()
        await client.close()


async def test_catalog_restarted_empty_is_followed_then_reregistration_converges(catalog_proc, echo_backends) -> None:
    """An in-memory catalog comes back empty with a lower index: the watches must not keep blocking
    on the old index; the empty state, then the re-registration (which the registrator does, see
    the module docstring) reach DNS and the ambassador within seconds."""
    catalog = await catalog_proc(False)
    b1 = await echo_backends("b1", "127.0.0.1")
    client = CatalogClient(CatalogConfig.from_url(catalog.url))
    view = CatalogView(client)
    dns = DnsServer(DnsConfig(listen=("127.0.0.1", 0)), view)
    amb = Ambassador(["127.0.0.1:0=web"], client, Options(wait_for_backends=0.2))
    try:
        # push the index well up, so the restarted catalog's index is lower
        for i in range(30):
            await client.register(ServiceDef(id=f"filler-{i}", name="filler", address="127.0.0.9", port=1000 + i))
        await client.register(ServiceDef(id="web-1", name="web", address="127.0.0.1", port=b1.port))
        await view.start()
        await dns.start()
        await view.wait_synced(10)
        await amb.start()
        port = amb.routes[0].listen_address[1]
        await eventually(lambda: _routes_to(port, b"b1"), 5, "ambassador routes to b1")

        catalog.kill()
        await asyncio.sleep(1.0)
        await catalog.start()  # in memory: nothing registered, index restarts low
        back = time.monotonic()

        async def web_gone() -> bool:
            return (await ask(dns, "web.service.consul")).rcode() == 3  # NXDOMAIN

        await eventually(web_gone, CONVERGE, "DNS follows the emptied catalog")
        await client.register(ServiceDef(id="web-1", name="web", address="127.0.0.1", port=b1.port))

        async def dns_back() -> bool:
            return records(await ask(dns, "web.service.consul")) == ["127.0.0.1"]

        await eventually(dns_back, CONVERGE, "re-registration in DNS")
        await eventually(lambda: _routes_to(port, b"b1"), CONVERGE, "re-registration as a backend")
        await eventually(_is(lambda: not view.stale and stale_metric(dns) == 0.0), CONVERGE, "stale flag cleared")
        assert time.monotonic() - back < 2 * CONVERGE
    finally:
        await amb.stop()
        await dns.stop()
        await view.stop()
        await client.close()


async def _routes_to(port: int, name: bytes) -> bool:
    try:
        return (await through(port)).startswith(name + b":")
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return False


def _is(predicate: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return predicate()

    return check
