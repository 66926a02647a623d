"""Across hosts: backends on several network-namespace "hosts", one shared catalog, one client
whose ambassador spreads connections over every host and follows hosts leaving and joining.

Each host's backend listens on the host's own LAN address (the same port on every host, as a
real deployment would), registered in the shared catalog with that address and a TCP health check
the catalog runs. The client's app dials only 127.0.0.1 in its own namespace, where a sidecar
``waypost ambassador`` listens; answers name the host that served them and the peer address the
backend saw (the client host's, proving the connection crossed the LAN).
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from tests.multihost.conftest import BACKEND_PORT, Lab, NetHost, NetnsDialer, ambassador_command
from tests.ports import free_port
from waypost.catalog import CatalogClient
from waypost.catalog.model import CheckDef, ServiceDef

pytestmark = pytest.mark.timeout(60)

CLIENT_LAST_OCTET = 100
AMBASSADOR_PORT = 6379  # the client's own loopback: free in its fresh namespace


@dataclass
class World:
    """The lab with its hosts, the shared catalog and the client's ambassador."""

    lab: Lab
    catalog: CatalogClient
    service: str
    client: NetHost
    dialer: NetnsDialer
    backends: dict[str, subprocess.Popen[str]] = field(default_factory=dict)

    async def add_host(self, name: str, last: int) -> NetHost:
        """A new host on the LAN running one backend, registered in the catalog with its address."""
        host = await asyncio.to_thread(self.lab.add_host, name, last)
        self.backends[name] = await asyncio.to_thread(self.lab.start_backend, host)
        await self.catalog.register(ServiceDef(
            id=f"{self.service}-{name}", name=self.service, address=host.address, port=BACKEND_PORT,
            checks=(CheckDef("tcp", f"{host.address}:{BACKEND_PORT}", interval="1s", timeout="1s"),)))
        return host

    async def ask(self) -> str:
        """One request through the client's ambassador; the host that answered (asserts success)."""
        answer = await self.dialer.request(AMBASSADOR_PORT, "ping")
        parts = answer.split()
        assert len(parts) == 3 and parts[2] == "ping", f"bad answer through the ambassador: {answer!r}"
        assert parts[1] == self.client.address, f"backend saw peer {parts[1]}, not the client host"
        return parts[0]

    async def spread(self, n: int) -> Counter[str]:
        """Which hosts answered `n` sequential requests (every one must succeed)."""
        return Counter([await self.ask() for _ in range(n)])

    async def until(self, want: set[str], n: int = 6, timeout: float = 10.0) -> Counter[str]:
        """Sample batches of `n` until exactly the hosts in `want` answer a batch."""
        deadline = time.monotonic() + timeout
        seen: Counter[str] = Counter()
        while time.monotonic() < deadline:
            seen = await self.spread(n)
            if set(seen) == want:
                return seen
            await asyncio.sleep(0.1)
        raise AssertionError(f"traffic did not settle on {sorted(want)} within {timeout}s (last batch: {seen})")

    async def healthy_hosts(self) -> set[str]:
        return {i.id.rsplit("-", 1)[1] for i in await self.catalog.instances(self.service)}


@pytest.fixture
async def world(lab: Lab, lan_catalog: CatalogClient) -> AsyncIterator[World]:
    """Hosts h1 and h2 each with a registered backend, and a client host running the ambassador."""
    service = f"kv-{uuid.uuid4().hex[:6]}"
    client = await asyncio.to_thread(lab.add_host, "client", CLIENT_LAST_OCTET)
    dialer = NetnsDialer(client.netns_path)
    w = World(lab, lan_catalog, service, client, dialer)
    try:
        await w.add_host("h1", 11)
        await w.add_host("h2", 12)
        admin = free_port()
        proc = lab.spawn(client, [
            *ambassador_command(), "--route", f"127.0.0.1:{AMBASSADOR_PORT}={service}",
            "--catalog", lan_catalog.url, "--lb", "round-robin", "--connect-timeout", "0.5",
            "--retries", "2", "--eject-after", "1", "--admin", f"{client.address}:{admin}"], "ambassador.log")
        await asyncio.to_thread(lab.wait_for_log, proc, "ambassador.log", "ambassador ready")
        yield w
    finally:
        dialer.close()


async def test_connections_spread_over_every_host(world: World) -> None:
    seen = await world.spread(10)
    assert seen == Counter({"h1": 5, "h2": 5})  # round-robin over the two hosts' instances


async def test_killed_backend_host_loses_traffic_without_failed_requests(world: World) -> None:
    await world.until({"h1", "h2"})
    world.lab.kill(world.backends["h1"])
    # right away: the refused connect is retried on h2, the app never sees an error
    assert set(await world.spread(6)) == {"h2"}
    # and the catalog's health check takes h1 out of the set for every client
    deadline = time.monotonic() + 5
    while await world.healthy_hosts() != {"h2"}:
        assert time.monotonic() < deadline, "the catalog did not mark h1's backend critical"
        await asyncio.sleep(0.2)
    assert set(await world.spread(6)) == {"h2"}


async def test_deregistered_host_drains_to_the_rest(world: World) -> None:
    await world.until({"h1", "h2"})
    await world.catalog.deregister(f"{world.service}-h1")
    await world.until({"h2"}, timeout=5)
    assert set(await world.spread(6)) == {"h2"}


async def test_unplugged_host_is_routed_around(world: World) -> None:
    """A host that drops off the network (connects time out, nothing refuses) costs a retry, not a failure."""
    await world.until({"h1", "h2"})
    await asyncio.to_thread(world.lab.unplug, "h1")
    started = time.monotonic()
    assert set(await world.spread(6)) == {"h2"}
    assert time.monotonic() - started < 5  # at most a couple of 0.5 s connect timeouts, then h1 is ejected


async def test_joining_host_gets_traffic(world: World) -> None:
    await world.until({"h1", "h2"})
    await world.add_host("h3", 13)
    await world.until({"h1", "h2", "h3"}, timeout=5)
    assert await world.spread(9) == Counter({"h1": 3, "h2": 3, "h3": 3})
